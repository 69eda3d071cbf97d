"""The checks of test_sharding.py, run in a process that sees 8 host devices.

``python -m tests.training.sharding_worker OUT`` (with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` set before JAX starts) trains the same
models on one device (no mesh) and on 1×8, 2×4 and 8×1 (data × model) meshes and writes what the
tests compare into ``OUT``: per run ``<case>_<mesh>.npz`` (the per-step losses and the final
state, real rows only, by path) and ``results.json`` (rows each device holds, the shapes of the
compiled step's all-gathers and of the row-sharded arrays, checkpoint histories). The tests
assert; this script only measures, so one process (one JAX start, 8 devices) serves them all.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recsys_jax.config_files import load_config_file
from recsys_jax.data.columns import rating_columns
from recsys_jax.evaluation.ranking import RankingStats, full_ranking
from recsys_jax.evaluation.sources import Embeddings
from recsys_jax.evaluation.validators import RatingEvaluator
from recsys_jax.models.mf import build_mf
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.tasks.rating import make_rating_loss
from recsys_jax.tasks.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.training import sharding, steps
from recsys_jax.training.checkpoints import CheckpointStore
from recsys_jax.training.loop import FitConfig, fit
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.tables import row_sharding
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings

jax.config.update("jax_disable_most_optimizations", True)  # As tests/conftest.py.

MESHES = {"1x8": (1, 8), "2x4": (2, 4), "8x1": (8, 1)}
BATCH, STEPS = 32, 20
TRAIN = planted_ratings(BATCH * STEPS, seed=0)  # One epoch = the 20 steps.
KEY = jax.random.key(3)


def mf(tables: str):
    model = build_mf({"dim": 4, "init_std": 0.1}, num_users=NUM_USERS,
                     num_items=NUM_ITEMS, train=TRAIN, rngs=nnx.Rngs(0))
    optimizer, _ = make_model_optimizer(
        model, {"name": "adam", "lr": 0.05, "weight_decay": 1e-3, "tables": tables},
        steps_per_epoch=STEPS, num_epochs=1)
    return model, optimizer, make_rating_loss("mse")


def two_tower(tables: str):
    rng = np.random.default_rng(0)
    model = TwoTower(rng.normal(size=(NUM_USERS, 5)).astype(np.float32),
                     rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32), rngs=nnx.Rngs(0),
                     hidden_dim=16, dim=8, item_id_dim=4)
    optimizer, _ = make_model_optimizer(model, {"name": "adam", "lr": 0.01, "tables": tables},
                                        steps_per_epoch=STEPS, num_epochs=1)
    loss = make_retrieval_loss(num_items=NUM_ITEMS,
                               item_log_q=sampling_log_q(TRAIN["item"], NUM_ITEMS))
    return model, optimizer, loss


CASES = {"mf_dense": lambda: mf("dense"), "mf_lazy_adam": lambda: mf("lazy_adam"),
         "two_tower": lambda: two_tower("dense")}


def all_gather_shapes(hlo: str) -> list[list[int]]:
    """The result shapes of the all-gathers in compiled HLO text."""
    shapes = []
    for result in re.findall(r"= (.+?) all-gather(?:-start)?\(", hlo):
        shapes += [[int(d) for d in dims.split(",") if d]
                   for dims in re.findall(r"\[([\d,]*)\]", result)]
    return shapes


def train(case: str, mesh_name: str | None) -> dict:
    """One epoch of 20 steps; writes the losses and final state, returns layout facts."""
    model, optimizer, loss = CASES[case]()
    graphdef, state = nnx.split((model, optimizer))
    initial = _float_arrays(state)
    facts = {}
    if mesh_name is None:
        layout, data = None, jax.device_put(TRAIN)
    else:
        mesh = sharding.make_mesh(*MESHES[mesh_name])
        layout = sharding.Layout.of(state, mesh)
        state = layout.shard(state)
        data = jax.device_put(TRAIN, sharding.replicated(mesh))
        table = state[0]["embedding" if "mf" in case else "item_id_embedding"][...]
        facts["table_shape"] = list(table.shape)
        facts["rows_per_device"] = sorted({s.data.shape[0] for s in table.addressable_shards})
        facts["row_sharded_shapes"] = sorted(
            {tuple(p.shape) for p, s in zip(jax.tree.leaves(layout.padded),
                                            jax.tree.leaves(layout.shardings), strict=True)
             if s.spec and s.spec[0] == sharding.MODEL_AXIS}
            | {tuple(x.shape) for x, s in zip(jax.tree.leaves(layout.logical),
                                              jax.tree.leaves(layout.shardings), strict=True)
               if s.spec and s.spec[0] == sharding.MODEL_AXIS})
    epoch = steps.make_train_epoch(graphdef, loss, BATCH, layout).compile(state, data, KEY)
    if layout is not None:
        facts["all_gathers"] = all_gather_shapes(epoch.scan.as_text())
    state, metrics = epoch(state, data, KEY, 1)
    if layout is not None:
        state = layout.unshard(state)
    np.savez(OUT / f"{case}_{mesh_name or 'one'}.npz", losses=np.asarray(metrics["loss"]),
             **_float_arrays(state), **{f"initial:{k}": v for k, v in initial.items()})
    return facts


def _float_arrays(state) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(state)
            if jnp.issubdtype(x.dtype, jnp.inexact)}


def fit_in_stages(stages: list[tuple[str | None, int, str]], workdir: Path) -> dict:
    """MF (lazy Adam) fitted in ``workdir`` up to each stage's epoch count on that stage's mesh
    (``None``: one device) with its ``data_on_device``; each stage after the first resumes from
    the checkpoints of the one before. Returns the last stage's history, the epoch each stage
    resumed from and the final state."""
    val = planted_ratings(100, seed=1)
    resumed = []
    for mesh_name, epochs, data_on_device in stages:
        model, optimizer, loss = mf("lazy_adam")
        mesh = None if mesh_name is None else sharding.make_mesh(*MESHES[mesh_name])
        with sharding.use_mesh(mesh):
            result = fit(model, optimizer, loss, TRAIN, RatingEvaluator(val, (1, 5)),
                         FitConfig(batch_size=BATCH, num_epochs=epochs, seed=5,
                                   data_on_device=data_on_device),
                         workdir=workdir, tensorboard=False)
        resumed.append(result.resumed_from)
    return {"history": [{k: r[k] for k in ("epoch", "train_loss", "val_rmse")}
                        for r in result.history],
            "resumed_from": resumed,
            "embedding": np.asarray(model.embedding[...]).tolist(),
            "moments": np.asarray(
                optimizer.table_state["moments"]["embedding"][...]).tolist()}


def restored_on(mesh_name: str, workdir: Path) -> dict:
    """The latest checkpoint in ``workdir`` restored onto mesh ``mesh_name`` (padded and split
    there), then cut back to its real rows."""
    model, optimizer, _ = mf("lazy_adam")
    layout = sharding.Layout.of(nnx.state((model, optimizer)),
                                sharding.make_mesh(*MESHES[mesh_name]))
    with CheckpointStore(workdir / "checkpoints", monitor="val_rmse", layout=layout) as store:
        state, loop_state = store.restore_latest(layout.padded)
    table = state[0]["embedding"][...]
    real = layout.unshard(state)
    return {"epoch": loop_state["epoch"], "table_shape": list(table.shape),
            "rows_per_device": sorted({s.data.shape[0] for s in table.addressable_shards}),
            "embedding": np.asarray(real[0]["embedding"][...]).tolist(),
            "moments": np.asarray(
                real[1]["table_state"]["moments"]["embedding"][...]).tolist()}


def gathered_table() -> dict:
    """A program that does all-gather a row-sharded table (replicating it), to show that
    ``all_gather_shapes`` finds one."""
    mesh = sharding.make_mesh(2, 4)
    table = jax.device_put(jnp.ones((72, 4)), NamedSharding(mesh, PartitionSpec(
        *row_sharding(2))))
    replicate = jax.jit(lambda t: t * 2, out_shardings=sharding.replicated(mesh))
    return {"all_gathers": all_gather_shapes(replicate.lower(table).compile().as_text())}


def ranking_on_a_mesh() -> dict:
    """Full ranking (top 5 of 53 items for 37 users, some excluded, chunks of 6 users) on one
    device and on a 4×2 mesh, whose data axis splits each chunk (rounded up to 8 users)."""
    rng = np.random.default_rng(2)
    source = Embeddings(rng.normal(size=(37, 8)).astype(np.float32),
                        rng.normal(size=(53, 8)).astype(np.float32), similarity="dot")
    exclude = sp.csr_array(rng.random((37, 53)) < 0.2)
    runs = {}
    for name, mesh in (("one", None), ("4x2", sharding.make_mesh(4, 2))):
        stats = RankingStats()
        with sharding.use_mesh(mesh):
            top = full_ranking(source, np.arange(37), 5, exclude=exclude, chunk_size=6,
                               stats=stats)
        runs[name] = {"items": top.items.tolist(), "scores": top.scores.tolist(),
                      "chunk_size": stats.chunk_size}
    return runs


def _largest_part(array: jax.Array) -> float:
    """The largest part of ``array`` one device holds, as a fraction of the whole."""
    return max(s.data.size for s in array.addressable_shards) / array.size


def _largest_buffer() -> int:
    """Bytes of the largest array any one device holds, over every live array."""
    return max(s.data.nbytes for a in jax.live_arrays() for s in a.addressable_shards)


def large_table() -> dict:
    """An MF table (5,001 rows × 64, rows the model axis does not divide) built, trained with
    lazy Adam for 2 epochs, validated and handed back on a 1×8 mesh, as a table too large for
    one device must be: what each device holds at every stage, the compiled init's memory per
    device, and the values against the same run on one device."""
    users, items, dim = 3001, 2000, 64
    rng = np.random.default_rng(4)
    train = rating_columns(rng.integers(0, users, 4096), rng.integers(0, items, 4096),
                           rng.integers(1, 6, 4096).astype(np.float32), num_users=users,
                           num_items=items)
    val = rating_columns(rng.integers(0, users, 512), rng.integers(0, items, 512),
                         rng.integers(1, 6, 512).astype(np.float32), num_users=users,
                         num_items=items)

    def build():
        return build_mf({"dim": dim, "init_std": 0.1}, num_users=users, num_items=items,
                        train=train, rngs=nnx.Rngs(0))
    mesh = sharding.make_mesh(1, 8)
    facts = {"table_bytes": (users + items) * dim * 4}
    _, abstract = nnx.split(nnx.eval_shape(build))

    def init_bytes(out_shardings) -> int:  # Per device, of the compiled init.
        memory = jax.jit(lambda: nnx.split(build())[1], out_shardings=out_shardings).lower(
            ).compile().memory_analysis()
        return memory.output_size_in_bytes + memory.temp_size_in_bytes
    facts["init_bytes_per_device"] = init_bytes(sharding.Layout.of(abstract, mesh).at_rest)
    facts["init_bytes_one_device"] = init_bytes(None)

    model = sharding.create_on_mesh(build, mesh)
    initial = np.asarray(model.embedding[...])
    facts["built"] = _largest_part(model.embedding[...])
    config = FitConfig(batch_size=256, num_epochs=2, seed=1, data_on_device="always")
    optimizer_config = {"name": "adam", "lr": 0.01, "tables": "lazy_adam"}
    evaluator = RatingEvaluator(val, (1, 5))
    seen = []

    def validate(model):
        seen.append({"table": _largest_part(model.embedding[...]),
                     "largest_buffer": _largest_buffer()})
        return evaluator(model)
    with sharding.use_mesh(mesh):
        optimizer, _ = make_model_optimizer(model, optimizer_config, steps_per_epoch=16,
                                            num_epochs=2)
        facts["moments_created"] = _largest_part(
            optimizer.table_state["moments"]["embedding"][...])
        result = fit(model, optimizer, make_rating_loss("mse"), train, validate, config,
                     workdir=None)
    facts["validated"] = seen
    facts["trained"] = {"table": _largest_part(model.embedding[...]),
                        "moments": _largest_part(
                            optimizer.table_state["moments"]["embedding"][...]),
                        "largest_buffer": _largest_buffer()}
    facts["history"] = [r["val_rmse"] for r in result.history]

    # The same on one device, from the same initial values (JAX's random bits do not depend
    # on the sharding; the init is jitted in both, so even the float rounding is the same).
    graphdef, _ = nnx.split(nnx.eval_shape(build))
    reference = nnx.merge(graphdef, jax.jit(lambda: nnx.split(build())[1])())
    facts["initial_equal"] = bool(np.array_equal(np.asarray(reference.embedding[...]),
                                                 initial))
    optimizer_one, _ = make_model_optimizer(reference, optimizer_config, steps_per_epoch=16,
                                            num_epochs=2)
    one = fit(reference, optimizer_one, make_rating_loss("mse"), train, evaluator, config,
              workdir=None)
    facts["history_one_device"] = [r["val_rmse"] for r in one.history]
    facts["max_difference"] = float(np.abs(np.asarray(model.embedding[...])
                                           - np.asarray(reference.embedding[...])).max())
    return facts


def runner_on_a_mesh() -> dict:
    """``configs/mf_tiny.py`` end to end (train, validate, fold-in, test) on a 2×4 mesh: its
    test metrics, and what each device holds of the table afterwards."""
    config = load_config_file(Path(__file__).resolve().parents[2] / "configs" / "mf_tiny.py")
    config.mesh.data, config.mesh.model = 2, 4
    run = train_and_evaluate(config, None)
    return {"test": {k: run.summary[k] for k in ("test_rmse", "test_mae")},
            "table": _largest_part(run.model.embedding[...])}


def main(out: Path) -> None:
    global OUT
    OUT = out
    assert jax.device_count() == 8, jax.devices()
    results = {"cases": {case: {name or "one": train(case, name) for name in [None, *MESHES]}
                         for case in CASES},
               "gathered_table": gathered_table(), "ranking": ranking_on_a_mesh(),
               "large_table": large_table(), "runner": runner_on_a_mesh()}
    with tempfile.TemporaryDirectory() as tmp:
        results["checkpoints"] = {
            "uninterrupted": fit_in_stages([(None, 4, "always")], Path(tmp) / "straight"),
            # Saved on 8 devices (batches streamed from the host, placed by
            # sharding.place_batches), resumed on 1.
            "8_to_1": fit_in_stages([("2x4", 2, "never"), (None, 4, "always")],
                                    Path(tmp) / "across"),
        }
        # And back: the one-device checkpoint of epoch 4 onto 8 devices.
        results["checkpoints"]["1_to_8"] = restored_on("1x8", Path(tmp) / "across")
    (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
