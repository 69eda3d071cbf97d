"""Checkpoints with orbax: the latest state (to resume) and the best one (to test).

Two ``ocp.CheckpointManager``s under one directory:

* ``latest/`` keeps one checkpoint, written after every epoch: model + optimizer state (which
  includes the optimizer step) and the loop state as JSON (epoch, early-stopping counters, the
  base rng key). An interrupted run restores it and continues with the next epoch.
* ``best/`` keeps one checkpoint, written when the monitored metric improves, with that metric
  attached (``best_fn``), so ``best_step()`` names the epoch it came from. A best checkpoint with
a missing or non-finite metric is refused.

Steps are epoch numbers. States are saved as host copies (the train step donates the device
buffers, which must not be read by an asynchronous save) and restored onto the layout of a
template state.

On a device mesh (a ``sharding.Layout``) the state is saved sharded: orbax copies each device's
shards to the host before ``save`` returns (so the next step may donate the buffers) and writes
them in the background; no host ever holds a whole table. The padded arrays are saved as they
are and each step records the real row count of every padded array (``real_rows`` in the step's
custom metadata). A restore reads onto the template's shapes and shardings: the target mesh's
padding rows are cut off or added (zeros) by orbax (``strict=False``), so a checkpoint written on
8 devices restores on 1 and the reverse. Shapes are checked on the real rows first.

Several processes (``training.distributed``) all call ``save``, ``restore`` and ``close``, as
orbax requires: each writes the shards its devices hold and process 0 the metadata. The
directory must be the same for all of them (one file system; on several hosts a shared one).
"""

from __future__ import annotations

import logging as std_logging
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from recsys_jax.training.sharding import Layout


def abstract_state(state: nnx.State) -> nnx.State:
    """Shapes, dtypes and shardings of ``state``, usable as a restore template."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


def _to_saveable(state: nnx.State, layout: Layout | None) -> dict:
    if layout is None:
        return jax.device_get(nnx.to_pure_dict(state))
    return nnx.to_pure_dict(state)  # Sharded: orbax copies the shards to the host in save().


def _restore_into(template: nnx.State, restored: dict) -> nnx.State:
    filled = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(filled, restored)
    return filled


class CheckpointStore:
    """The ``latest`` and ``best`` checkpoints of one training run."""

    def __init__(self, directory: str | os.PathLike, *, monitor: str, mode: str = "min",
                 layout: Layout | None = None):
        """Opens (creating if needed) ``directory/latest`` and ``directory/best``.

        Args:
          directory: the run's checkpoint directory.
          monitor: the metric that defines "best", e.g. ``"val_rmse"``.
          mode: ``"min"`` or ``"max"``.
          layout: the states' layout on a device mesh (saved sharded; restore templates are
            then ``layout.padded``), or ``None`` (one device: saved as host copies).
        """
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        directory = os.path.abspath(os.fspath(directory))
        self.directory = directory
        self.monitor = monitor
        self.layout = layout
        # Real row counts of the padded arrays, by the checkpoint's key ("/0/embedding").
        self._real_rows = {} if layout is None else {
            "/" + path.removesuffix("/value"): real
            for path, (real, _) in layout.padded_rows().items()}
        # Handlers named up front so a fresh process can read metadata before restoring.
        self._latest = ocp.CheckpointManager(
            os.path.join(directory, "latest"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                                 multiprocessing_options=_barriers("latest")),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "loop": ocp.JsonCheckpointHandler()})
        self._best = ocp.CheckpointManager(
            os.path.join(directory, "best"),
            item_handlers={"state": ocp.StandardCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, best_fn=lambda metrics: metrics[monitor],
                best_mode=mode, multiprocessing_options=_barriers("best")))

    def latest_epoch(self) -> int | None:
        """The epoch of the latest checkpoint, or ``None`` (waits for pending saves)."""
        self._latest.wait_until_finished()
        return self._latest.latest_step()

    def best_epoch(self) -> int | None:
        """The epoch of the best checkpoint, or ``None`` (waits for pending saves)."""
        self._best.wait_until_finished()
        return self._best.best_step()

    def save_latest(self, epoch: int, state: nnx.State, loop_state: dict[str, Any]) -> None:
        """Saves the state and JSON-serialisable loop state after ``epoch``."""
        _free_step(self._latest, epoch)
        self._latest.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state, self.layout)),
            loop=ocp.args.JsonSave(loop_state)), custom_metadata=self._metadata())

    def save_best(self, epoch: int, state: nnx.State, metrics: dict[str, float]) -> None:
        """Saves the state as the new best, with ``metrics`` (must include the monitor).

        Raises:
          ValueError: when the monitored metric is missing or not finite: such a state must
            never become "best" (``loop.fit`` stops a diverged run before it gets here).
        """
        value = metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"refusing to save a best checkpoint in {self.directory} for epoch "
                             f"{epoch}: {self.monitor} is {value}, not a finite number")
        _free_step(self._best, epoch)
        self._best.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_to_saveable(state, self.layout))),
            metrics={k: float(v) for k, v in metrics.items()},
            custom_metadata=self._metadata())

    def _metadata(self) -> dict[str, Any] | None:
        return {"real_rows": self._real_rows} if self._real_rows else None

    def restore_latest(self, template: nnx.State) -> tuple[nnx.State, dict[str, Any]]:
        """The latest state (on ``template``'s layout) and loop state."""
        self.wait()
        epoch = self._latest.latest_step()
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}/latest")
        target = nnx.to_pure_dict(abstract_state(template))
        strict = self._check_compatible(self._latest, epoch, target)
        restored = self._latest.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target, strict=strict),
            loop=ocp.args.JsonRestore()))
        return _restore_into(template, restored.state), dict(restored.loop)

    def restore_best(self, template: nnx.State) -> nnx.State:
        """The best state, on ``template``'s layout."""
        self.wait()
        epoch = self._best.best_step()
        if epoch is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}/best")
        target = nnx.to_pure_dict(abstract_state(template))
        strict = self._check_compatible(self._best, epoch, target)
        restored = self._best.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target, strict=strict)))
        return _restore_into(template, restored.state)

    def _check_compatible(self, manager: ocp.CheckpointManager, step: int, target: dict
                          ) -> bool:
        """Raises a readable ``ValueError`` when the saved arrays differ from the target's
        (compared on their real rows), before orbax fails deep inside an asynchronous read;
        returns whether the saved and target shapes are also equal padded (orbax's
        ``strict``)."""
        saved = _flat_shapes(manager.item_metadata(step)["state"].tree)
        wanted = _flat_shapes(target)
        custom = manager.metadata(step).custom_metadata or {}
        saved_real = _real_shapes(saved, custom.get("real_rows", {}))
        wanted_real = _real_shapes(wanted, self._real_rows)
        problems = [f"{k}: saved {saved_real.get(k, 'nothing')}, model has "
                    f"{wanted_real.get(k, 'nothing')}"
                    for k in sorted(saved_real.keys() | wanted_real.keys())
                    if saved_real.get(k) != wanted_real.get(k)]
        if problems:
            raise ValueError(
                f"the checkpoint {manager.directory}/{step} does not fit this model and "
                f"optimizer (written with another config?); use a new workdir. "
                f"{len(problems)} difference(s), e.g. " + "; ".join(problems[:3]))
        return saved == wanted

    def discard_best_after(self, epoch: int) -> None:
        """Deletes best checkpoints later than ``epoch``: a run resumed from ``epoch`` redoes
        those epochs, and a best saved by the interrupted process must not outlive them."""
        self._best.wait_until_finished()
        for step in self._best.all_steps():
            if step > epoch:
                self._best.delete(step)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the managers."""
        self._latest.close()
        self._best.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _barriers(name: str) -> ocp.options.MultiprocessingOptions:
    # Several processes: the two managers save the same epoch at once, and orbax's barriers
    # are named by step, so each manager needs its own prefix (unused with one process).
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


def _free_step(manager: ocp.CheckpointManager, step: int) -> None:
    # orbax silently skips saving a step that exists; a redone epoch must replace it.
    manager.wait_until_finished()
    if step in manager.all_steps():
        manager.delete(step)


def _flat_shapes(tree: Any, prefix: str = "") -> dict[str, tuple]:
    if isinstance(tree, Mapping):
        flat = {}
        for key, value in tree.items():
            flat.update(_flat_shapes(value, f"{prefix}/{key}"))
        return flat
    return {prefix: (tuple(tree.shape), np.dtype(tree.dtype).name)}


def _real_shapes(shapes: dict[str, tuple], real_rows: Mapping[str, int]) -> dict[str, tuple]:
    """``shapes`` (by key: ``(shape, dtype)``) with each padded array's rows set to its real
    row count."""
    return {k: ((int(real_rows[k]),) + shape[1:] if k in real_rows else shape, dtype)
            for k, (shape, dtype) in shapes.items()}


class _DropOrbaxInfo(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logging() -> None:
    """Hides orbax's INFO lines (several per save) so the one-line-per-epoch log stays
    readable; warnings and errors still show."""
    logger = std_logging.getLogger("absl")
    if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
        logger.addFilter(_DropOrbaxInfo())

