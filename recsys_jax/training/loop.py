"""The fit loop: epochs of compiled training, validation, early stopping, checkpoints, logs.

Model-agnostic: it takes an NNX model and optimizer, a loss ``(model, batch, rng)``, the
training data as a dict of NumPy columns and an ``evaluate(model) -> metrics`` callback, so
MF, two-tower and NCF share it.

Per epoch the host does one call (the whole epoch when the data fits on the device, else one
call per chunk of ``chunk_steps`` batches), one evaluation call, a JSON line and a checkpoint;
nothing runs per batch in Python.

Files under ``workdir``: ``metrics.jsonl`` and ``tensorboard/`` (one record per epoch, appended
as it ends; ``metric_log``), ``checkpoints/latest`` and ``checkpoints/best`` (see
``checkpoints.CheckpointStore``). Without a workdir nothing is written (for benchmarks).
Running ``fit`` again on the same workdir resumes after the latest checkpoint; a run that had
finished (early stop or all epochs) just restores its best state.

On a device mesh (``sharding.use_mesh``; ``sharding.current_mesh`` is not ``None``) the
state is padded and placed on the mesh (``sharding.Layout``: tables' rows split over the model
axis, the rest replicated), the training columns and tables are replicated and every batch is
split over the data axis; the validator and the caller see the real (unpadded) arrays, at rest
on the mesh (a table split over its columns, ``sharding.at_rest_sharding``);
checkpoints are written sharded and restore onto any mesh. Without one, nothing of this runs.
With several processes (``distributed``) every process calls ``fit`` alike: each builds only its
rows of the streamed batches, all write the checkpoints together, and process 0 alone writes
``metrics.jsonl`` and ``tensorboard/`` (the others read the records back on resume).

Divergence guard: after every epoch the training loss, every floating-point array of the model
and optimizer state and the monitored metric must be finite, checked before anything of that
epoch is logged or saved; otherwise ``DivergenceError`` names the epoch and what went
non-finite. So no non-finite state is ever checkpointed (a best one least of all), the files
end at the last finite epoch, and a rerun resumes from there. Restored checkpoints are checked
the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from recsys_jax.data.columns import num_rows
from recsys_jax.training import sharding
from recsys_jax.training import steps as steps_lib
from recsys_jax.training.checkpoints import CheckpointStore, abstract_state
from recsys_jax.training.distributed import is_primary
from recsys_jax.training.early_stopping import EarlyStopping
from recsys_jax.training.losses import LossFn
from recsys_jax.training.metric_log import METRICS_FILE, MetricLog, read_metrics

Evaluate = Callable[[nnx.Module], Mapping[str, float]]

CHECKPOINT_DIR = "checkpoints"
__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "DivergenceError",
    "Evaluate",
    "FitConfig",
    "FitResult",
    "data_fits_on_device",
    "fit",
    "nonfinite_arrays",
    "read_metrics",
]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, parameter or monitored metric (or a checkpoint
    holds one); the message names the epoch and what went non-finite."""


@jax.jit
def _all_finite(arrays: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays])


def nonfinite_arrays(tree: Any) -> list[str]:
    """Paths (``"0/embedding"``) of the floating-point leaves of ``tree`` that hold a NaN
    or an infinity; one compiled reduction, so the arrays stay on their device."""
    leaves = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return []
    finite = np.asarray(_all_finite([x for _, x in leaves]))
    return [jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value")
            for (path, _), ok in zip(leaves, finite, strict=True) if not ok]


def _state_names(paths: list[str]) -> list[str]:
    # ``fit`` splits the pair (model, optimizer): name the halves instead of 0 and 1.
    halves = {"0": "model", "1": "optimizer"}
    return [halves.get(p.split("/", 1)[0], p.split("/", 1)[0]) + "/" + p.split("/", 1)[-1]
            for p in paths]


def _check_epoch(epoch: int, loss: float, state: nnx.State, saved_up_to: int | None) -> None:
    """Raises ``DivergenceError`` when the loss or the state after ``epoch`` is not finite."""
    bad = _state_names(nonfinite_arrays(state))
    if math.isfinite(loss) and not bad:
        return
    what = [f"the training loss is {loss}"] if not math.isfinite(loss) else []
    if bad:
        what.append(f"{len(bad)} array(s) hold NaN/inf: {', '.join(bad[:6])}"
                    + (", ..." if len(bad) > 6 else ""))
    raise DivergenceError(
        f"training diverged in epoch {epoch}: {'; '.join(what)}. Nothing of epoch {epoch} was "
        "logged or saved" + (f"; the checkpoints and metrics.jsonl end at epoch {saved_up_to}"
                             if saved_up_to else "") + ". Lower the learning rate "
        "(optimizer.lr) or check the data for extreme values; the same config diverges again "
        "in the same epoch.")


def _check_restored(state: nnx.State, where: str) -> None:
    bad = _state_names(nonfinite_arrays(state))
    if bad:
        raise DivergenceError(
            f"the checkpoint {where} holds NaN/inf in {', '.join(bad[:6])} (written before "
            "checkpoints were checked?); it cannot be resumed or tested. Use a new --workdir, or "
            "--overwrite to move this run aside.")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of ``fit``.

    Attributes:
      batch_size: rows per step.
      num_epochs: the most epochs to run (counted over resumes).
      patience: stop after this many epochs without improvement of ``monitor``; 0 disables.
      seed: base of every random key (shuffling, per-step rngs).
      monitor: metric returned by ``evaluate`` that selects the best epoch.
      mode: ``"min"`` or ``"max"`` for ``monitor``.
      min_delta: the least change of ``monitor`` that counts as an improvement.
      data_on_device: ``"auto"`` (device memory permitting), ``"always"`` or ``"never"``.
      chunk_steps: batches per compiled call when the data is streamed from the host.
    """

    batch_size: int
    num_epochs: int
    patience: int = 0
    seed: int = 0
    monitor: str = "val_rmse"
    mode: str = "min"
    min_delta: float = 0.0
    data_on_device: str = "auto"
    chunk_steps: int = 1024

    def __post_init__(self):
        if self.batch_size <= 0 or self.num_epochs < 0 or self.patience < 0:
            raise ValueError(f"need batch_size > 0, num_epochs >= 0, patience >= 0: {self}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.data_on_device not in ("auto", "always", "never"):
            raise ValueError(f"data_on_device must be 'auto', 'always' or 'never', got "
                             f"{self.data_on_device!r}")
        if self.chunk_steps <= 0:
            raise ValueError(f"chunk_steps must be positive, got {self.chunk_steps}")


@dataclasses.dataclass
class FitResult:
    """What ``fit`` did.

    Attributes:
      best_epoch: epoch whose state the model now holds (``None`` if no epoch ran).
      best_value: its ``monitor`` value.
      last_epoch: the last epoch trained (over all resumes).
      epochs_run: epochs trained by this call.
      stopped_early: whether patience ran out.
      resumed_from: the checkpoint epoch this call started after, if any.
      compile_time_s: time to compile the epoch function in this call (on-device data; when
        streaming, compilation happens inside the first epoch and is counted there).
      data_on_device: whether epochs ran on device-resident data.
      history: all per-epoch records, as in ``metrics.jsonl``.
    """

    best_epoch: int | None
    best_value: float | None
    last_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None
    compile_time_s: float
    data_on_device: bool
    history: list[dict[str, Any]]


def data_fits_on_device(columns: Mapping[str, np.ndarray], device: jax.Device | None = None,
                        headroom: float = 3.0,
                        tables: Mapping[str, np.ndarray] | None = None) -> bool:
    """Whether ``headroom`` × the data (original, shuffled copy, batches), plus the ``tables``
    (on the device either way, never copied), fits in half of the device's free memory;
    devices that report no limit (CPU) are taken to fit."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # Backends without memory statistics.
        stats = None
    if not stats or "bytes_limit" not in stats:
        return True
    free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    table_bytes = sum(np.asarray(t).nbytes for t in (tables or {}).values())
    return (headroom * sum(np.asarray(c).nbytes for c in columns.values()) + table_bytes
            <= 0.5 * free)


def _format_epoch(record: Mapping[str, Any], num_epochs: int, monitor: str) -> str:
    val = "  ".join(f"{k} {v:.4f}" for k, v in record.items()
                    if k.startswith(("val_", monitor)) and isinstance(v, float))
    return (f"epoch {record['epoch']}/{num_epochs}: train_loss {record['train_loss']:.4f} | "
            f"{val} | {record['epoch_time_s']:.2f}s "
            f"({record['rows_per_s'] / 1e3:.0f}k rows/s), eval {record['eval_time_s']:.2f}s"
            + (" *" if record["improved"] else ""))


def _replicate(arrays: Mapping[str, np.ndarray], layout: sharding.Layout | None
               ) -> dict[str, jax.Array]:
    return sharding.replicate(arrays, None if layout is None else layout.mesh)


def _epoch_runner(graphdef: nnx.GraphDef, loss_fn: LossFn, train: Mapping[str, np.ndarray],
                  config: FitConfig, state: nnx.State, key: jax.Array,
                  on_device: bool, tables: Mapping[str, np.ndarray],
                  layout: sharding.Layout | None = None) -> tuple[Callable, float]:
    """``(run(state, epoch) -> (state, per-step metrics on host), compile seconds)``."""
    # On the device in both modes: each step reads them whole.
    device_tables = _replicate(tables, layout) if tables else None
    if not on_device:
        run_chunk = steps_lib.make_train_steps(graphdef, loss_fn, layout)
        # With several processes each builds only its rows of every batch.
        rows = None if layout is None else sharding.process_batch_rows(layout.mesh,
                                                                       config.batch_size)

        def run_streamed(state, epoch):
            step_metrics = []
            for chunk in steps_lib.host_epoch_chunks(train, key, epoch, config.batch_size,
                                                      config.chunk_steps, rows):
                if layout is not None:  # (steps, batch, ...): the batch axis split.
                    chunk = sharding.place_batches(chunk, layout.mesh, batch_axis=1)
                state, chunk_metrics = run_chunk(state, chunk, key, device_tables)
                step_metrics.append(chunk_metrics)
            return state, jax.device_get(step_metrics)
        return run_streamed, 0.0

    t0 = time.perf_counter()
    # On a mesh the columns are replicated: each device gathers its part of every batch.
    data = _replicate(train, layout)
    compiled = steps_lib.make_train_epoch(graphdef, loss_fn, config.batch_size, layout).compile(
        state, data, key, device_tables)
    compile_time = time.perf_counter() - t0
    logging.info("compiled the train epoch (%d steps of %d) in %.2fs",
                 steps_lib.steps_per_epoch(len(next(iter(train.values()))), config.batch_size),
                 config.batch_size, compile_time)

    def run_on_device(state, epoch):
        state, step_metrics = compiled(state, data, key, np.int32(epoch), device_tables)
        return state, [jax.device_get(step_metrics)]
    return run_on_device, compile_time


def fit(model: nnx.Module, optimizer: nnx.Optimizer, loss_fn: LossFn,
        train: Mapping[str, np.ndarray], evaluate: Evaluate, config: FitConfig, *,
        workdir: str | os.PathLike | None, schedule: optax.Schedule | None = None,
        tensorboard: bool = True,
        tables: Mapping[str, np.ndarray] | None = None) -> FitResult:
    """Trains ``model`` in place and leaves it (and ``optimizer``) at the best epoch's state.

    Args:
      model: the NNX model; its arrays are replaced (the originals are donated).
      optimizer: ``nnx.Optimizer`` over ``model``.
      loss_fn: ``(model, batch, rng) -> (loss, aux)``; must respect ``batch["weight"]``.
      train: training columns (validated ids), equal length: one row per example, shuffled
        and cut into batches.
      evaluate: ``model -> {metric: value}`` including ``config.monitor``; called each epoch.
      config: the loop settings.
      workdir: where ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/`` live; resumes
        from them. ``None`` runs without any file I/O (benchmarks): the best state is kept
        in memory and nothing can be resumed.
      schedule: the learning-rate schedule, only to log the rate of each epoch.
      tensorboard: also write TensorBoard event files (with a workdir).
      tables: arrays every step reads whole, which ``train``'s columns may point into (e.g.
        per-event tables); put on the device once, in both data modes, and seen by the loss in
        its batch by name (``steps.with_tables``). Their names must differ from the columns'.

    Raises:
      DivergenceError: when an epoch ends with a non-finite loss, state or monitored metric
        (nothing of that epoch is logged or saved), or a restored checkpoint is not finite.
      ValueError: on a device mesh whose data axis does not divide ``config.batch_size``.

    Inside ``sharding.use_mesh(mesh)`` training runs on that mesh (see the module docstring);
    ``model`` and ``optimizer`` end with their real arrays on it.

    If training raises, ``model`` and ``optimizer`` may hold donated (deleted) arrays; the
    checkpoints in ``workdir`` are intact and a new call resumes from them.
    """
    n = num_rows(train)
    if n == 0:
        raise ValueError("no training rows")
    tables = dict(tables or {})
    if set(tables) & set(train) or "weight" in tables:
        raise ValueError(f"table names {sorted(set(tables) & (set(train) | {'weight'}))} are "
                         "also column names: the loss could not tell them apart")
    steps_per_epoch = steps_lib.steps_per_epoch(n, config.batch_size)
    graphdef, state = nnx.split((model, optimizer))
    mesh = sharding.current_mesh()
    layout = None
    if mesh is None:
        template = abstract_state(state)
    else:
        sharding.check_divisible(config.batch_size, mesh)
        layout = sharding.Layout.of(state, mesh)
        template = layout.padded
        # The model's own arrays are freed once copied, as one device's first epoch donates them.
        state = layout.shard(state, delete_inputs=True)
    key = jax.random.key(config.seed)
    early = EarlyStopping(config.patience, config.mode, config.min_delta)
    store = log = None
    start_epoch, resumed_from, finished = 1, None, False
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        store = CheckpointStore(workdir / CHECKPOINT_DIR, monitor=config.monitor,
                                mode=config.mode, layout=layout)
        resumed_from = store.latest_epoch()
    if resumed_from is not None:
        try:
            state, loop_state = store.restore_latest(template)
            _check_restored(state, f"{store.directory}/latest")
        except BaseException:
            store.close()
            raise
        early = EarlyStopping(**loop_state["early_stopping"])
        key = jax.random.wrap_key_data(np.asarray(loop_state["key_data"], np.uint32))
        start_epoch = loop_state["epoch"] + 1
        finished = loop_state["stopped_early"]
        store.discard_best_after(loop_state["epoch"])
        logging.info("resumed from %s at epoch %d", store.directory, loop_state["epoch"])
    if workdir is not None and is_primary():  # Process 0 writes the logs; all, checkpoints.
        log = MetricLog(workdir, keep_up_to=start_epoch - 1, tensorboard=tensorboard)
    history: list[dict[str, Any]] = []
    if log is not None:
        history = list(log.history)
    elif workdir is not None:  # The other processes read process 0's records back.
        history = [r for r in read_metrics(workdir) if r.get("epoch", 0) < start_epoch]
    best_in_memory = None

    on_device = config.data_on_device == "always" or (
        config.data_on_device == "auto" and data_fits_on_device(train, tables=tables))
    compile_time, epochs_run, stopped_early = 0.0, 0, finished
    epoch = start_epoch - 1
    try:
        if not finished and start_epoch <= config.num_epochs:
            run_epoch, compile_time = _epoch_runner(graphdef, loss_fn, train, config, state, key,
                                                    on_device, tables, layout)
            for epoch in range(start_epoch, config.num_epochs + 1):
                t0 = time.perf_counter()
                state, step_metrics = run_epoch(state, epoch)
                train_metrics = steps_lib.summarize_steps(step_metrics)
                epoch_time = time.perf_counter() - t0
                _check_epoch(epoch, train_metrics["loss"], state,
                             epoch - 1 if store is not None else None)

                t0 = time.perf_counter()
                real = state if layout is None else layout.unshard(state)
                eval_metrics = {k: float(v) for k, v in
                                evaluate(nnx.merge(graphdef, real)[0]).items()}
                eval_time = time.perf_counter() - t0
                if config.monitor not in eval_metrics:
                    raise KeyError(f"evaluate returned {sorted(eval_metrics)}, without the "
                                   f"monitored metric {config.monitor!r}")
                if not math.isfinite(eval_metrics[config.monitor]):
                    raise DivergenceError(
                        f"the monitored metric {config.monitor} is "
                        f"{eval_metrics[config.monitor]} after epoch {epoch} although the loss "
                        "and the parameters are finite: the validator has nothing to measure "
                        "(an empty validation part?) or the model's outputs overflow. Nothing "
                        f"of epoch {epoch} was logged or saved.")
                improved = early.update(eval_metrics[config.monitor], epoch)
                record = {
                    "epoch": epoch,
                    "train_loss": train_metrics.pop("loss"),
                    **{f"train_{k}": v for k, v in train_metrics.items()},
                    **eval_metrics,
                    "lr": (float(schedule((epoch - 1) * steps_per_epoch))
                           if schedule is not None else None),
                    "epoch_time_s": epoch_time,
                    "rows_per_s": n / epoch_time,
                    "eval_time_s": eval_time,
                    "improved": improved,
                }
                history.append(record)
                stopped_early = early.should_stop
                if store is None:
                    if improved:  # The next epoch donates ``state``: keep a copy of the best.
                        best_in_memory = jax.tree.map(lambda x: x.copy(), state)
                else:
                    if log is not None:
                        log.write(record)
                    if improved:
                        store.save_best(epoch, state, eval_metrics)
                    store.save_latest(epoch, state, {
                        "epoch": epoch,
                        "early_stopping": dataclasses.asdict(early),
                        "key_data": np.asarray(jax.random.key_data(key)).tolist(),
                        "stopped_early": stopped_early,
                    })
                epochs_run += 1
                logging.info("%s", _format_epoch(record, config.num_epochs, config.monitor))
                if stopped_early:
                    logging.info("early stop: no %s improvement for %d epochs (best %.4f at "
                                 "epoch %d)", config.monitor, config.patience,
                                 early.best_value, early.best_epoch)
                    break
        if store is not None and store.best_epoch() is not None:
            state = store.restore_best(template)
            _check_restored(state, f"{store.directory}/best")
        elif best_in_memory is not None:
            state = best_in_memory
    finally:
        if store is not None:
            store.close()  # Finishes pending saves even when training failed.
        if log is not None:
            log.close()
    nnx.update((model, optimizer), state if layout is None else layout.unshard(state))
    return FitResult(
        best_epoch=early.best_epoch, best_value=early.best_value,
        last_epoch=max(epoch, start_epoch - 1), epochs_run=epochs_run,
        stopped_early=stopped_early, resumed_from=resumed_from, compile_time_s=compile_time,
        data_on_device=on_device, history=history)
