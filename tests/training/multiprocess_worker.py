"""The checks of test_multiprocess.py: the same training in two processes and in one.

``python -m tests.training.multiprocess_worker OUT --num_processes=2 --process_id=i
--coordinator_address=localhost:PORT`` (twice, with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``) joins two processes of 4 host devices
each (``jax.distributed`` with gloo CPU collectives); without the flags (and with 8 host
devices) it is the one-process reference. Both train the same runs with ``loop.fit`` on meshes
of all 8 devices and write, from each process, ``OUT/<process>.json``: per run the epoch
records (losses, validation metrics), the final parameters and optimizer state as every
process sees them, and which rows of each batch the process fed. The one-process reference
also restores the two processes' checkpoint (``OUT/workdirs/two/…``) on one device, once
their results are written (all three may start together). The tests assert; this script only
measures.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app
from flax import nnx

from recsys_jax.evaluation.evaluate import target_from_arrays
from recsys_jax.evaluation.validators import RankingValidator, RatingEvaluator
from recsys_jax.fileio import atomic_write_json
from recsys_jax.models.mf import build_mf
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.tasks.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.training import distributed, sharding
from recsys_jax.training.checkpoints import CheckpointStore, abstract_state
from recsys_jax.training.loop import FitConfig, fit
from recsys_jax.training.optimizers import make_model_optimizer
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings

distributed.define_flags()
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_disable_most_optimizations", True)  # As tests/conftest.py.

BATCH, EPOCH_STEPS, EPOCHS = 32, 10, 2  # 20 steps.
TRAIN = planted_ratings(BATCH * EPOCH_STEPS, seed=0)
VAL = planted_ratings(100, seed=1)
# (mesh data × model, optimizer.tables, data_on_device): MF with lazy Adam, its table's rows
# split over all 8 devices of both processes (1×8; each process builds every row of a batch);
# the two-tower with dense Adam on 4×2, batches streamed from the host with each process
# building only its half of every batch, the in-batch softmax over the global batch across
# both processes and full-ranking validation split over the data axis.
RUNS = {"mf_lazy_adam_1x8": ("mf", (1, 8), "lazy_adam", "always"),
        "two_tower_4x2": ("two_tower", (4, 2), "dense", "never")}


def build(kind: str, tables: str):
    if kind == "mf":
        model = build_mf({"dim": 4, "init_std": 0.1}, num_users=NUM_USERS,
                         num_items=NUM_ITEMS, train=TRAIN, rngs=nnx.Rngs(0))
        optimizer, _ = make_model_optimizer(
            model, {"name": "adam", "lr": 0.05, "weight_decay": 1e-3, "tables": tables},
            steps_per_epoch=EPOCH_STEPS, num_epochs=EPOCHS)
        return model, optimizer, make_rating_loss("mse"), RatingEvaluator(VAL, (1, 5)), \
            "val_rmse", "min"
    rng = np.random.default_rng(0)
    model = TwoTower(rng.normal(size=(NUM_USERS, 5)).astype(np.float32),
                     rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=16, dim=8, item_id_dim=4)
    optimizer, _ = make_model_optimizer(model, {"name": "adam", "lr": 0.01, "tables": tables},
                                        steps_per_epoch=EPOCH_STEPS, num_epochs=EPOCHS)
    loss = make_retrieval_loss(num_items=NUM_ITEMS,
                               item_log_q=sampling_log_q(TRAIN["item"], NUM_ITEMS))
    seen = {(u, i) for u, i in zip(TRAIN["user"], TRAIN["item"], strict=True)}
    held = np.array([(u, i) for u, i in zip(VAL["user"], VAL["item"], strict=True)
                     if (u, i) not in seen])
    empty = (np.zeros(0, int), np.zeros(0, int))
    target = target_from_arrays((TRAIN["user"], TRAIN["item"]), (held[:, 0], held[:, 1]), empty,
                                NUM_USERS, NUM_ITEMS, part="val")
    return model, optimizer, loss, RankingValidator(target, ks=(5,), metrics=("recall", "ndcg")), \
        "val_ndcg@5", "max"


def _arrays(tree) -> dict[str, list]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(x).tolist()
            for path, x in jax.tree_util.tree_leaves_with_path(tree)
            if np.issubdtype(np.asarray(x).dtype, np.inexact)}


def run(name: str, workdir: Path) -> dict:
    kind, mesh_shape, tables, on_device = RUNS[name]
    model, optimizer, loss, validator, monitor, mode = build(kind, tables)
    mesh = sharding.make_mesh(*mesh_shape)
    with sharding.use_mesh(mesh):
        result = fit(model, optimizer, loss, TRAIN, validator,
                     FitConfig(batch_size=BATCH, num_epochs=EPOCHS, seed=5, monitor=monitor,
                               mode=mode, data_on_device=on_device),
                     workdir=workdir / name, tensorboard=False)
    rows = sharding.process_batch_rows(mesh, BATCH)
    keep = ("epoch", "train_loss", monitor)
    return {"history": [{k: r[k] for k in keep} for r in result.history],
            "best_epoch": result.best_epoch, "batch_rows": [rows.start, rows.stop],
            "state": _arrays(nnx.state((model, optimizer)))}


def restored_on_one_device(name: str, workdir: Path) -> dict:
    """The latest checkpoint of run ``name`` in ``workdir`` restored with no mesh."""
    kind, _, tables, _ = RUNS[name]
    model, optimizer, *_ = build(kind, tables)
    state = nnx.state((model, optimizer))
    with CheckpointStore(workdir / name / "checkpoints", monitor="val_rmse") as store:
        restored, loop_state = store.restore_latest(abstract_state(state))
    return {"epoch": loop_state["epoch"], "state": _arrays(restored),
            "devices": sorted({str(d) for x in jax.tree.leaves(restored) for d in x.devices()})}


def main(argv: list[str]) -> None:
    out = Path(argv[1])
    several = distributed.initialize_from_flags()
    assert jax.device_count() == 8, jax.devices()
    tag = "two" if several else "one"
    results = {"process_index": jax.process_index(), "process_count": jax.process_count(),
               "local_devices": jax.local_device_count()}
    results["runs"] = {name: run(name, out / "workdirs" / tag) for name in RUNS}
    if not several:  # The two processes' checkpoint (saved on 8 devices) on one device,
        # once they are done (the tests start all three processes at once).
        deadline = time.monotonic() + 300
        while not all((out / f"two_{i}.json").exists() for i in range(2)):
            if time.monotonic() > deadline:
                raise TimeoutError("the two processes wrote no results")
            time.sleep(0.2)
        results["restored"] = restored_on_one_device("mf_lazy_adam_1x8", out / "workdirs" / "two")
    atomic_write_json(out / f"{tag}_{jax.process_index()}.json", results)


if __name__ == "__main__":
    app.run(main, argv=sys.argv)
