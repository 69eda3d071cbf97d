"""``train_and_evaluate(config, workdir)``: any task, on the shared engine, start to finish.

Steps: check the config (``config_checks``, before anything is touched), claim the workdir (its
layout, an OS lock, the run's identity), ``task.prepare`` the data and check the split
fingerprint, build the model through the registry, train it (the engine's ``loop.fit`` on the
task's loss and validator, or the model's own ``fit`` for a ``SelfFitting`` model), evaluate the
test part, save the model (``model/``, through the registry) and the task's exports, and write
``test_metrics.json``, ``learning_curve.png`` and ``report.md`` once. Everything is returned in
memory (``RunResult``); later steps never read back what earlier ones wrote.

Runs you can trust (docs/design.md): a rerun on a workdir resumes only a run of the same
identity (``run_identity``: the result-determining config keys and the split fingerprint),
else ``WorkdirError`` names the keys that differ; ``overwrite=True`` (``--overwrite``) first
moves an existing run aside to ``<workdir>.replaced-<timestamp>``. One run per workdir at a
time (``workdir_lock``). A diverging run stops in the epoch it diverges
(``loop.DivergenceError``).

Files under ``workdir`` (besides each task's own, listed in its module):

  run_format.json   the layout version of this workdir (other layouts are refused)
  run_identity.json the run's identity (``run_identity``)
  lock.<i>          the lock file of process i (``workdir_lock``; stays, unlocked, after a run)
  config.json       the resolved config of the latest invocation
  metrics.jsonl, tensorboard/, checkpoints/   per-epoch records and checkpoints (``loop.fit``)
  ids/, split/      the id mapping and the split with its leakage report
  model/            the trained model (``models.registry.save_model``)
  test_metrics.json the run's record (``RunResult.summary``)
  learning_curve.png, report.md

Devices: the model is built, trained, tested and exported on the mesh of ``config.mesh``
(``training.sharding``; a model with tables is created straight onto it, its tables never whole
on one device; ``summary["mesh"]`` records its shape); on one device there is no mesh and
nothing is sharded.

Several processes (``training.distributed``; every process calls this with the same config and
workdir): all of them train together on the mesh of all their devices and write the
checkpoints together; process 0 alone writes every other file. After training each process
holds the whole model; process 0 tests, exports and reports on a mesh of its own devices, the
others return the training facts only (``summary`` without test metrics, ``sections`` empty).

Timings in every record: ``total_wall_time_s`` (the whole call), ``compile_time_s``,
``epoch_times_s`` (training only, per epoch), ``median_epoch_time_s`` (over epochs 2.. when
there are several, since epoch 1 can include compilation, else epoch 1), ``train_time_s``
(epochs plus per-epoch validation) and, for self-fitting models, ``fit_time_s``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from recsys_jax import fileio
from recsys_jax.evaluation.runs import RUN_FILE, update_run_metadata
from recsys_jax.models.contract import SelfFitting, require
from recsys_jax.models.registry import save_model
from recsys_jax.tasks.base import RunResult, Task, TaskData, monitor_mode
from recsys_jax.tasks.config_checks import ConfigError, check_config
from recsys_jax.tasks.registry import get_task
from recsys_jax.tasks.run_identity import (
    IDENTITY_FILE,
    WorkdirError,
    check_config_identity,
    check_fingerprint,
    how_to_proceed,
    move_aside,
    write_identity,
)
from recsys_jax.tasks.workdir_lock import WorkdirLock, WorkdirLocked
from recsys_jax.training import distributed, sharding
from recsys_jax.training.curves import plot_learning_curve
from recsys_jax.training.loop import DivergenceError, FitConfig, FitResult, fit, nonfinite_arrays
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.steps import steps_per_epoch
from recsys_jax.training.tables import has_tables

__all__ = ["ConfigError", "DivergenceError", "RunResult", "WorkdirError", "WorkdirLocked",
           "check_workdir", "open_workdir", "train_and_evaluate"]

RUN_FORMAT = 3
RUN_FORMAT_FILE = "run_format.json"
MODEL_DIR = "model"
# Timings copied into the exported run's metadata once the whole call has been timed.
RUN_TIMINGS = ("total_wall_time_s", "compile_time_s", "train_time_s", "median_epoch_time_s",
               "fit_time_s")
# Files whose presence without ``run_format.json`` marks a workdir of an older layout.
_RUN_FILES = ("config.json", "metrics.jsonl", "checkpoints", "test_metrics.json")
# Why a workdir of an older layout version cannot be continued.
_OLD_LAYOUTS = {
    2: "layout 2 recorded no run identity (run_identity.json), so whether this config "
       "produced its checkpoints cannot be checked, and its best checkpoint may hold a "
       "diverged (NaN) state",
}


def holds_run(workdir: Path) -> bool:
    """Whether ``workdir`` holds a recsys_jax run of any layout."""
    return any((workdir / name).exists()
               for name in (RUN_FORMAT_FILE, IDENTITY_FILE, *_RUN_FILES))


def check_workdir(workdir: Path, task: str) -> None:
    """Refuses a workdir of another layout or task; writes nothing.

    Raises:
      WorkdirError: for a workdir written by an older version (another file layout: it
        would be misread) or by another task.
    """
    marker = workdir / RUN_FORMAT_FILE
    if marker.exists():
        try:
            saved = json.loads(marker.read_text())
            saved.get("format")
        except (OSError, ValueError, AttributeError) as e:
            raise WorkdirError(f"{marker} is unreadable ({e}). {how_to_proceed(workdir)}"
                               ) from e
        if saved.get("format") != RUN_FORMAT:
            why = _OLD_LAYOUTS.get(saved.get("format"), "it would be misread")
            raise WorkdirError(f"{workdir} holds a run of layout {saved.get('format')}, this "
                               f"version writes layout {RUN_FORMAT} ({why}). "
                               + how_to_proceed(workdir))
        if saved.get("task") != task:
            raise WorkdirError(f"{workdir} holds a {saved.get('task')!r} run, not {task!r}. "
                               + how_to_proceed(workdir))
        return
    old = [name for name in _RUN_FILES if (workdir / name).exists()]
    if old:
        raise WorkdirError(
            f"{workdir} was written by an older recsys_jax (it has {', '.join(old)} but no "
            f"{RUN_FORMAT_FILE}). Since the tasks refactor a run saves its model under "
            "model/ (registry format) instead of params.npz / two_tower_params.npz, writes "
            "report.md once and records timings differently, so resuming it would misread "
            "it. Use a new --workdir (the old one is left untouched), or --overwrite to move "
            "it aside.")


def claim_workdir(workdir: Path, task: str) -> None:
    """Writes ``run_format.json`` (once ``check_workdir`` passed and the lock is held)."""
    if not (workdir / RUN_FORMAT_FILE).exists():
        fileio.atomic_write_json(workdir / RUN_FORMAT_FILE, {"format": RUN_FORMAT, "task": task})


def write_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Writes ``config.json``, the resolved config of this invocation (after the identity
    check: only ``run_identity.RESULT_NEUTRAL_KEYS`` can differ from the recorded run's)."""
    fileio.atomic_write_json(workdir / "config.json", json.loads(config.to_json()))


def open_workdir(workdir: str | os.PathLike, task: str, *, overwrite: bool = False,
                 process_index: int = 0) -> tuple[Path, WorkdirLock]:
    """Checks and locks ``workdir`` for a run of ``task``, first moving a run there aside when
    ``overwrite``; returns the path and the held lock (release it when the run ends).

    Raises:
      WorkdirError: for another layout or task, or a directory ``overwrite`` must not move.
      WorkdirLocked: when another run holds the workdir.
    """
    workdir = Path(workdir)
    if overwrite and workdir.is_dir() and any(workdir.iterdir()):
        if not holds_run(workdir):
            move_aside(workdir, is_run=False)  # Raises: only runs are moved.
        # Locked first: a run in progress is never moved from under its feet.
        with WorkdirLock(workdir, process_index):
            moved = move_aside(workdir, is_run=True)
        logging.warning("--overwrite: moved the run in %s aside to %s", workdir, moved)
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir(workdir, task)
    return workdir, WorkdirLock(workdir, process_index).acquire()


def fit_config(config: ml_collections.ConfigDict, monitor: str) -> FitConfig:
    """The engine's loop settings from a config's ``training`` block."""
    t = config.training
    return FitConfig(batch_size=t.batch_size, num_epochs=t.epochs, patience=t.patience,
                     seed=t.seed, monitor=monitor, mode=monitor_mode(monitor),
                     data_on_device=t.get("data_on_device", "auto"))


def fit_model(task: Task, config: ml_collections.ConfigDict, data: TaskData,
              model: nnx.Module, workdir: Path | None) -> FitResult:
    """Trains ``model`` in place with the engine on the task's loss and validator; leaves it
    at its best validation epoch. ``workdir=None`` trains without any file I/O."""
    t = config.training
    tables = config.optimizer.get("tables", "dense")
    if tables != "dense" and not has_tables(model):
        raise ConfigError(
            f"optimizer.tables = {tables!r} updates the rows of embedding tables a step reads, "
            f"but {config.model.name!r} declares no tables (training.tables.Table); use "
            "optimizer.tables='dense'")
    optimizer, schedule = make_model_optimizer(
        model, config.optimizer, steps_per_epoch=steps_per_epoch(len(data.train["user"]),
                                                                 t.batch_size),
        num_epochs=t.epochs)
    monitor = task.monitor(config)
    return fit(model, optimizer, task.loss(config, data), data.train,
               task.validator(config, data), fit_config(config, monitor), workdir=workdir,
               schedule=schedule, tensorboard=config.get("tensorboard", True),
               tables=data.train_tables)


def training_facts(result: FitResult | None, monitor: str, num_rows: int) -> dict[str, Any]:
    """The summary fields that describe training (one schema for every task)."""
    if result is None:
        return {"monitor": monitor}
    epoch_times = [r["epoch_time_s"] for r in result.history]
    steady = epoch_times[1:] or epoch_times
    median = statistics.median(steady) if steady else None
    return {
        "monitor": monitor,
        "best_epoch": result.best_epoch,
        "best_val": result.best_value,
        monitor: result.best_value,
        "epochs_trained": result.last_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "compile_time_s": result.compile_time_s,
        "epoch_times_s": epoch_times,
        "median_epoch_time_s": median,
        "train_rows_per_s": num_rows / median if median else None,
        "train_time_s": sum(r["epoch_time_s"] + r["eval_time_s"] for r in result.history),
        "data_on_device": result.data_on_device,
    }


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | os.PathLike | None, *,
                       data: TaskData | None = None, overwrite: bool = False,
                       test: bool = True) -> RunResult:
    """Runs the task ``config.task`` end to end; see the module docstring.

    Args:
      config: an experiment config (``task``, ``data``, ``split``, ``model``, ``optimizer``,
        ``training`` and the task's own blocks).
      workdir: output directory; a run of the same identity interrupted there resumes.
        ``None`` writes nothing (sweeps, benchmarks).
      data: the task's prepared data (sweeps over one split, tests); by default
        ``task.prepare`` loads it from the config.
      overwrite: first move a run already in ``workdir`` aside to
        ``<workdir>.replaced-<timestamp>`` and start afresh (nothing is deleted).
      test: evaluate the test part (with fold-in, exports and report sections). ``False``
        stops after training and validation (sweep trials, which must not see test anyway);
        it writes nothing, so it needs ``workdir=None``.

    Raises:
      ConfigError: for config values that cannot give a meaningful run (before any work).
      WorkdirError: for a workdir of another layout, task or run identity.
      WorkdirLocked: when another run is using the workdir.
      DivergenceError: when training diverges (the workdir keeps the last finite epoch).
      TypeError: when the model lacks the protocol its task needs.
    """
    start = time.perf_counter()
    task = get_task(config)
    check_config(config, task.name, data_given=data is not None)
    if not test and workdir is not None:
        raise ValueError("test=False leaves a run without test metrics: pass workdir=None")
    if workdir is None:
        return _run(config, task, None, data, start, test=test)
    # Several processes: process 0 checks (and with ``overwrite`` moves aside) the workdir
    # first; the others open it once it has.
    if distributed.is_primary():
        workdir, lock = open_workdir(workdir, task.name, overwrite=overwrite)
        distributed.barrier("recsys_jax: workdir opened")
    else:
        distributed.barrier("recsys_jax: workdir opened")
        workdir, lock = open_workdir(workdir, task.name, process_index=jax.process_index())
    try:
        return _run(config, task, workdir, data, start)
    finally:
        lock.release()


def _prepare(config: ml_collections.ConfigDict, task: Task, workdir: Path | None,
             data: TaskData | None) -> TaskData:
    """The task's data; with a workdir, checked against (and recorded in) the run identity:
    config keys before any work, the split fingerprint before any checkpoint is restored."""
    if workdir is None:
        return data if data is not None else task.prepare(config, None)
    recorded = check_config_identity(workdir, task.name, config)
    writes = distributed.is_primary()  # Several processes: process 0 writes the files.
    if writes:
        claim_workdir(workdir, task.name)
    if data is None:
        # A recorded run has its prepared files (ids/, split/, ...) saved already: they stay
        # untouched, so a rerun refused below cannot overwrite them.
        data = task.prepare(config, workdir if recorded is None and writes else None)
    check_fingerprint(workdir, recorded, data.split_fingerprint)
    if writes:
        if recorded is None:  # Recorded once the data is prepared, before any training.
            write_identity(workdir, task.name, config, data.split_fingerprint)
        write_config(config, workdir)
    return data


def _run(config: ml_collections.ConfigDict, task: Task, workdir: Path | None,
         data: TaskData | None, start: float, test: bool = True) -> RunResult:
    data = _prepare(config, task, workdir, data)
    # Built, trained, tested and exported on the config's mesh (none: one device).
    mesh = sharding.mesh_from_config(config)
    model = _build_model(config, task, data, mesh)
    require(model, task.model_protocol, f"the {task.name} task")
    mesh_shape = dict(mesh.shape) if mesh else {"data": 1, "model": 1}
    with sharding.use_mesh(mesh):
        result, facts = _train(config, task, workdir, data, model)
        if not distributed.is_multiprocess():
            return _test_and_write(config, task, workdir, data, model, start, test, mesh_shape,
                                   result, facts)
    # Several processes: all trained on the mesh of all their devices (each validation gave
    # every process the same metrics); now the model is copied whole to each process and
    # process 0 alone tests, exports and reports, on a mesh of its own devices. The others
    # return the training facts.
    nnx.update(model, distributed.local_copy(nnx.state(model)))
    mesh_shape["processes"] = jax.process_count()
    if not distributed.is_primary():
        summary = {"task": task.name, "model": config.model.name, "mesh": mesh_shape,
                   **training_facts(result, task.monitor(config), len(data.train["user"])),
                   **facts}
        return RunResult(config=config, task=task, data=data, model=model, fit=result,
                         summary=summary, sections=[], workdir=workdir)
    local = sharding.make_mesh(devices=jax.local_devices())
    with sharding.use_mesh(local if local.size > 1 else None):
        return _test_and_write(config, task, workdir, data, model, start, test, mesh_shape,
                               result, facts)


def _build_model(config: ml_collections.ConfigDict, task: Task, data: TaskData,
                 mesh: Mesh | None) -> nnx.Module:
    """The task's model; on a mesh, a model that declares tables is created straight onto it
    (``sharding.create_on_mesh``: each table split from the start, never whole on one device).
    Models without tables have nothing to split and are built as on one device."""
    def build() -> nnx.Module:
        return task.build_model(config, data)
    if mesh is None or not has_tables(nnx.eval_shape(build)):
        return build()
    return sharding.create_on_mesh(build, mesh)


def _train(config: ml_collections.ConfigDict, task: Task, workdir: Path | None,
           data: TaskData, model: nnx.Module) -> tuple[FitResult | None, dict[str, Any]]:
    """Trains ``model`` in place (the engine's loop, or a ``SelfFitting`` model's own fit);
    returns the loop's result and the self-fitting facts."""
    result, facts = None, {}
    monitor = task.monitor(config)
    if isinstance(model, SelfFitting):
        t0 = time.perf_counter()
        facts = dict(model.fit(task.fit_columns(data), config))
        facts["fit_time_s"] = time.perf_counter() - t0
        bad = nonfinite_arrays(nnx.state(model))
        if bad:
            raise DivergenceError(f"{config.model.name}'s fit left NaN/inf in "
                                  f"{', '.join(bad[:6])}; nothing was saved")
        # Validated now, before the test's fold-in changes the user side (sweeps choose on it).
        facts["best_val"] = facts[monitor] = task.validator(config, data)(model)[monitor]
    else:
        result = fit_model(task, config, data, model, workdir)
    return result, facts


def _test_and_write(config: ml_collections.ConfigDict, task: Task, workdir: Path | None,
                    data: TaskData, model: nnx.Module, start: float, test: bool,
                    mesh_shape: dict[str, int], result: FitResult | None,
                    facts: dict[str, Any]) -> RunResult:
    """Tests the trained model, exports it and writes the run's record and report."""
    monitor = task.monitor(config)
    summary: dict[str, Any] = {
        "task": task.name, "model": config.model.name,
        **(task.evaluate(config, data, model) if test else {}),
        **training_facts(result, monitor, len(data.train["user"])), **facts,
        "num_train": len(data.train["user"]),
        "num_users": data.num_users, "num_items": data.num_items,
        "num_parameters": task.num_parameters(model),
        "dataset": data.dataset, "split_protocol": data.split_protocol,
        "split_fingerprint": data.split_fingerprint,
        "mesh": mesh_shape,
    }
    if workdir is not None:
        save_model(model, workdir / MODEL_DIR, model_config=config.model.to_dict(),
                   num_users=data.num_users, num_items=data.num_items,
                   metadata={"task": task.name, "dataset": data.dataset,
                             "split_fingerprint": data.split_fingerprint})
        summary.update(task.export(config, data, model, workdir, summary))
    sections = task.report_sections(config, data, model, summary, workdir) if test else []
    summary["total_wall_time_s"] = time.perf_counter() - start
    if workdir is not None and (workdir / "run" / RUN_FILE).is_file():
        update_run_metadata(workdir / "run", {k: summary[k] for k in RUN_TIMINGS if k in summary})
    if workdir is not None:
        fileio.atomic_write_json(workdir / "test_metrics.json", summary)
        if result is not None and result.history:
            plot_learning_curve(result.history, workdir / "learning_curve.png",
                                monitor=monitor, title=f"{config.model.name}, {workdir.name}")
        fileio.atomic_write_text(workdir / "report.md",
                                 format_report(config, task, summary, sections))
        logging.info("%s; outputs in %s", task.headline(summary), workdir)
    return RunResult(config=config, task=task, data=data, model=model, fit=result,
                     summary=summary, sections=sections, workdir=workdir)


def format_report(config: ml_collections.ConfigDict, task: Task, summary: Mapping[str, Any],
                  sections: list[str]) -> str:
    """The Markdown of ``report.md``: title, the task's sections, training facts, files."""
    o, t = config.optimizer, config.training
    lines = [f"# {summary['model']} on {summary['dataset']} ({task.name} task, "
             f"`{summary['split_protocol']}` split)", ""]
    for section in sections:
        lines += [section.rstrip(), ""]
    median = summary.get("median_epoch_time_s")
    lines += ["## Training", ""]
    if "best_epoch" in summary:
        lines += [
            f"- optimizer: {o.name}"
            + (f" (tables: {o.tables})" if o.get("tables", "dense") != "dense" else "")
            + f", lr {o.lr:g} ({o.get('schedule', 'constant')}), weight "
            f"decay {o.get('weight_decay', 0.0):g}; batch {t.batch_size}, up to {t.epochs} "
            f"epochs, patience {t.patience} on `{summary['monitor']}`, seed {t.seed}",
            f"- best epoch {summary['best_epoch']} of {summary['epochs_trained']}"
            + (" (stopped early)" if summary["stopped_early"] else "")
            + (f", resumed after epoch {summary['resumed_from']}"
               if summary.get("resumed_from") else "")
            + (f"; best {summary['monitor']} {summary['best_val']:.4f}"
               if summary.get("best_val") is not None else ""),
            f"- compile {summary['compile_time_s']:.2f}s; median epoch "
            + (f"{median:.2f}s ({summary['train_rows_per_s']:,.0f} rows/s)" if median
               else "n/a")
            + f" (data {'on device' if summary['data_on_device'] else 'streamed from host'})",
        ]
    else:
        lines += [f"- fitted without the gradient loop in {summary['fit_time_s']:.2f}s"
                  + (f"; {summary['monitor']} {summary['best_val']:.4f}"
                     if summary.get("best_val") is not None else "")]
    lines += [f"- {summary['num_parameters']:,} parameters; whole run "
              f"{summary['total_wall_time_s']:.1f}s wall", ""]
    if "best_epoch" in summary:
        lines += ["![learning curve](learning_curve.png)", ""]
    return "\n".join(lines)
