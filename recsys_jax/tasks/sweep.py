"""Hyperparameter sweeps with equal budgets, for any task, selected on validation only.

``run_sweep`` prepares the task's data once (``task.prepare``, saving ``ids/`` and ``split/``
into the sweep's directory), trains one trial per planned set of config overrides through
``runner.train_and_evaluate(config, None, data=...)`` (early stopping on the task's validation
monitor), picks the trial with the best validation value (``monitor_mode``: min for error
metrics, max otherwise; ties go to the earlier trial), refits the chosen config with its own
workdir ``<output_dir>/best`` and tests it there. Trials never touch test: they run
``train_and_evaluate(..., test=False)``, which stops after training and validation (no fold-in,
no test scoring, no index), so test can never steer the choice and costs nothing per trial.

A search space maps dotted config fields to values (docs/evaluation.md, "Tuning with equal
budgets"):

  ``[v1, v2, ...]``                 choices (grid: every one; random: one drawn uniformly)
  ``{"log_uniform": [lo, hi]}``     random only: exp(uniform(log lo, log hi)), 3 significant
                                    digits
  ``{"uniform": [lo, hi]}``         random only: uniform(lo, hi), 3 significant digits
  ``{"int_uniform": [lo, hi]}``     random only: an integer in [lo, hi], both included

Grid search runs the whole product of the choices (a budget smaller than the grid is refused:
a cut grid is no longer a grid); random search draws ``budget`` distinct trials from
``numpy.random.default_rng(seed)``, field by field in the space's order, so the same space and
seed give the same trials.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import itertools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from recsys_jax import fileio
from recsys_jax.tasks.base import RunResult, monitor_mode
from recsys_jax.tasks.config_checks import check_config
from recsys_jax.tasks.rating_search import apply_overrides
from recsys_jax.tasks.registry import get_task
from recsys_jax.tasks.runner import DivergenceError, holds_run, train_and_evaluate

Overrides = dict[str, Any]
SEARCHES = ("grid", "random")
RANGES = ("log_uniform", "uniform", "int_uniform")
# Fields the tasks' ``prepare`` reads (data set, split, features, positives threshold, the
# sequential task's window length and windows): the data is prepared once per sweep, so they
# cannot vary between trials. Sweep them by running
# one sweep per value (``--config.<field>=...``). The monitor cannot vary either: trials
# would then be ranked on different metrics.
FIXED_FIELDS = ("data.*", "split.*", "features.*", "implicit.*", "training.min_rating",
                "model.history", "model.max_len", "training.windows", "training.monitor",
                "task")
BEST_DIR = "best"
JSON_FILE, MARKDOWN_FILE = "sweep.json", "sweep.md"
_MAX_DRAWS_PER_TRIAL = 100


class SweepError(ValueError):
    """A search space, budget or output directory that cannot give a fair sweep."""


# ---------------------------------------------------------------------------------------------
# Search space.


def load_space(spec: str) -> dict[str, Any]:
    """The search space given as JSON text, or as the path of a ``.json`` file or of a ``.py``
    file defining ``SPACE`` (a dict).

    Raises:
      SweepError: for text that is neither, or a file without ``SPACE``.
    """
    path = Path(spec)
    if spec.endswith((".json", ".py")):
        if not path.is_file():
            raise SweepError(f"--space: no file {spec}")
        if path.suffix == ".py":
            module_spec = importlib.util.spec_from_file_location("_sweep_space", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            if not isinstance(getattr(module, "SPACE", None), dict):
                raise SweepError(f"--space: {spec} must define SPACE = {{field: values}}")
            return dict(module.SPACE)
        spec = path.read_text()
    try:
        space = json.loads(spec)
    except json.JSONDecodeError as e:
        raise SweepError(f"--space is neither JSON nor a .json/.py file ({e}); e.g. "
                         '\'{"optimizer.lr": [1e-3, 3e-3], "model.dim": [32, 64]}\'') from e
    if not isinstance(space, dict):
        raise SweepError(f"--space must be a JSON object {{field: values}}, got {spec!r}")
    return space


def check_space(space: Mapping[str, Any], search: str) -> None:
    """Refuses an empty space, fields the sweep must hold fixed, malformed values, and ranges
    under grid search; each message names the field.

    Raises:
      SweepError: listing every problem.
    """
    if search not in SEARCHES:
        raise SweepError(f"--search must be one of {SEARCHES}, got {search!r}")
    if not space:
        raise SweepError("the search space is empty: give at least one field and its values")
    problems = []
    for field, values in space.items():
        if any(fnmatch.fnmatchcase(field, pattern) for pattern in FIXED_FIELDS):
            problems.append(f"{field}: fixed within a sweep (the data is prepared once and "
                            "trials share one monitor); run one sweep per value with "
                            f"--config.{field}=...")
        elif isinstance(values, dict):
            problems += _range_problems(field, values, search)
        elif not isinstance(values, (list, tuple)) or not values:
            problems.append(f"{field}: give a non-empty list of values or a range "
                            f"({', '.join(RANGES)}), got {values!r}")
    if problems:
        raise SweepError("bad search space:\n  " + "\n  ".join(problems))


def _range_problems(field: str, values: Mapping[str, Any], search: str) -> list[str]:
    if len(values) != 1 or next(iter(values)) not in RANGES:
        return [f"{field}: a range is one of {{{', '.join(RANGES)}: [lo, hi]}}, got {values!r}"]
    kind, bounds = next(iter(values.items()))
    if search == "grid":
        return [f"{field}: grid search needs a list of values, not a {kind} range; list the "
                "values or use --search=random"]
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
            or not all(isinstance(b, (int, float)) for b in bounds) or bounds[0] > bounds[1]):
        return [f"{field}: {kind} needs [lo, hi] with lo <= hi, got {bounds!r}"]
    if kind == "log_uniform" and bounds[0] <= 0:
        return [f"{field}: log_uniform needs lo > 0, got {bounds!r}"]
    if kind == "int_uniform" and not all(float(b).is_integer() for b in bounds):
        return [f"{field}: int_uniform needs integer bounds, got {bounds!r}"]
    return []


def grid_size(space: Mapping[str, Any]) -> int | None:
    """How many distinct points the space has (``None`` when a field is a range)."""
    if any(isinstance(v, dict) for v in space.values()):
        return None
    return math.prod(len(_distinct(v)) for v in space.values())


def _distinct(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def grid_trials(space: Mapping[str, Any]) -> list[Overrides]:
    """Every combination of the fields' values (first field varies slowest)."""
    fields = list(space)
    return [dict(zip(fields, combo))
            for combo in itertools.product(*(_distinct(space[f]) for f in fields))]


def _draw(values: Any, rng: np.random.Generator) -> Any:
    if not isinstance(values, dict):
        return values[int(rng.integers(len(values)))]
    kind, (lo, hi) = next(iter(values.items()))
    if kind == "int_uniform":
        return int(rng.integers(int(lo), int(hi), endpoint=True))
    x = (math.exp(rng.uniform(math.log(lo), math.log(hi))) if kind == "log_uniform"
         else rng.uniform(lo, hi))
    return float(f"{x:.3g}")  # Readable tables; duplicates after rounding are redrawn.


def random_trials(space: Mapping[str, Any], budget: int, seed: int) -> list[Overrides]:
    """``budget`` distinct trials drawn reproducibly from ``seed``.

    Raises:
      SweepError: when the space has fewer than ``budget`` distinct points.
    """
    size = grid_size(space)
    if size is not None and size < budget:
        raise SweepError(f"the space has only {size} distinct points but --budget={budget}; "
                         "lower the budget, widen the space, or use --search=grid")
    rng = np.random.default_rng(seed)
    trials: list[Overrides] = []
    seen: set[str] = set()
    for _ in range(_MAX_DRAWS_PER_TRIAL * budget):
        trial = {field: _draw(values, rng) for field, values in space.items()}
        key = json.dumps(trial, sort_keys=True)
        if key not in seen:
            seen.add(key)
            trials.append(trial)
            if len(trials) == budget:
                return trials
    raise SweepError(f"found only {len(trials)} distinct trials in "
                     f"{_MAX_DRAWS_PER_TRIAL * budget} draws; widen the ranges or lower "
                     f"--budget={budget}")


def plan_trials(space: Mapping[str, Any], search: str, budget: int | None,
                seed: int) -> list[Overrides]:
    """The trials of a sweep, in the order they run.

    Args:
      space: the search space (``check_space``).
      search: ``grid`` or ``random``.
      budget: the number of trials; for grid ``None`` means the whole grid, and a budget
        smaller than the grid is refused. Required for random search.
      seed: the random search's seed (unused by grid).

    Raises:
      SweepError: for a bad space or budget.
    """
    check_space(space, search)
    if budget is not None and budget < 1:
        raise SweepError(f"--budget must be at least 1, got {budget}")
    if search == "grid":
        trials = grid_trials(space)
        if budget is not None and budget < len(trials):
            raise SweepError(f"the grid has {len(trials)} points but --budget={budget}: raise "
                             "the budget, shrink the space, or use --search=random (a cut "
                             "grid would favour the fields listed first)")
        return trials
    if budget is None:
        raise SweepError("--search=random needs --budget=<number of trials>")
    return random_trials(space, budget, seed)


def trial_config(base: ml_collections.ConfigDict, overrides: Mapping[str, Any]
                 ) -> ml_collections.ConfigDict:
    """``base`` with ``overrides`` applied (JSON lists become tuples where the field holds a
    tuple, e.g. ``model.mlp_layers``).

    Raises:
      SweepError: for a field the config lacks or a value of the wrong type.
    """
    converted = {}
    for field, value in overrides.items():
        current = _lookup(base, field)
        converted[field] = (tuple(value) if isinstance(value, list)
                            and isinstance(current, tuple) else value)
    try:
        return apply_overrides(base, converted)
    except (KeyError, TypeError, AttributeError) as e:
        raise SweepError(f"cannot apply {dict(overrides)} to the config: {e}") from e


def _lookup(config: ml_collections.ConfigDict, field: str) -> Any:
    block: Any = config
    for name in field.split("."):
        if not isinstance(block, ml_collections.ConfigDict) or name not in block:
            return None
        block = block[name]
    return block


# ---------------------------------------------------------------------------------------------
# Trials and selection.


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trained configuration; validation facts only.

    Attributes:
      index: its position in the plan (0-based).
      overrides: the dotted fields set on the base config.
      value: its best validation value of the monitor (NaN when it diverged).
      seconds: wall time of its ``train_and_evaluate``.
      best_epoch, epochs_trained: from the run's summary (``None`` for self-fitting models).
      status: ``ok`` or ``diverged``.
    """

    index: int
    overrides: Overrides
    value: float
    seconds: float
    best_epoch: int | None = None
    epochs_trained: int | None = None
    status: str = "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def validation_value(run: RunResult) -> float:
    """The run's best validation value of its monitor: ``best_val`` from the gradient loop or,
    for a self-fitting model, from the runner's validation right after its fit (before any
    test-time fold-in); the task's validator on the model for runs that recorded none."""
    value = run.summary.get("best_val")
    if value is None:
        value = run.task.validator(run.config, run.data)(run.model)[run.summary["monitor"]]
    return float(value)


def run_trial(index: int, base: ml_collections.ConfigDict, overrides: Overrides,
              data: Any) -> Trial:
    """Trains one trial on the prepared ``data`` (nothing written) and keeps its validation
    facts; a diverging trial is recorded with value NaN instead of stopping the sweep."""
    t0 = time.perf_counter()
    try:
        run = train_and_evaluate(trial_config(base, overrides), None, data=data, test=False)
    except DivergenceError:
        return Trial(index, dict(overrides), math.nan, time.perf_counter() - t0,
                     status="diverged")
    return Trial(index, dict(overrides), validation_value(run), time.perf_counter() - t0,
                 best_epoch=run.summary.get("best_epoch"),
                 epochs_trained=run.summary.get("epochs_trained"))


def select(trials: Sequence[Trial], mode: str) -> Trial:
    """The trial with the best finite validation value (``mode`` ``min`` or ``max``); the
    earliest among equals.

    Raises:
      SweepError: when no trial has a finite value.
    """
    finite = [t for t in trials if math.isfinite(t.value)]
    if not finite:
        raise SweepError(f"all {len(trials)} trials diverged or gave no finite validation "
                         "value; nothing to choose")
    sign = 1.0 if mode == "min" else -1.0
    return min(finite, key=lambda t: (sign * t.value, t.index))


def test_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numeric test metrics of a run summary: ``test_*`` keys, and ``test`` blocks per
    protocol as ``test_<metric> (<protocol>)``."""
    out = {}
    for key, value in summary.items():
        if key.startswith("test_") and _is_number(value):
            out[key] = float(value)
        elif key == "test" and isinstance(value, Mapping):
            for label, metrics in value.items():
                out.update({f"test_{m} ({label})": float(v) for m, v in metrics.items()
                            if _is_number(v)})
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# The sweep.


@dataclasses.dataclass
class SweepResult:
    """A finished sweep (``sweep.json`` holds ``to_dict()``).

    Attributes:
      task, model, monitor, mode: what was tuned and how trials are ranked.
      search, seed, budget: the plan (``budget``: trials asked for; ``None`` = whole grid).
      space: the search space.
      trials: every trial, in the order run.
      chosen: the selected trial.
      refit: the refitted chosen config: ``workdir``, ``val`` (its best validation value),
        ``seconds`` and ``test`` (its test metrics).
      trial_seconds: the trials' total wall time (the tuning budget used).
      prepare_seconds: preparing the data once.
    """

    task: str
    model: str
    monitor: str
    mode: str
    search: str
    seed: int
    budget: int | None
    space: dict[str, Any]
    trials: list[Trial]
    chosen: Trial
    refit: dict[str, Any]
    trial_seconds: float
    prepare_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "task": self.task, "model": self.model, "monitor": self.monitor,
            "mode": self.mode, "search": self.search, "seed": self.seed,
            "space": self.space, "selection": f"best validation {self.monitor} ({self.mode})",
            "budget": {"requested": self.budget, "trials": len(self.trials),
                       "trial_seconds": self.trial_seconds,
                       "prepare_seconds": self.prepare_seconds,
                       "refit_seconds": self.refit["seconds"]},
            "trials": [t.to_dict() for t in self.trials],
            "chosen": self.chosen.to_dict(), "refit": self.refit,
        }


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuses, before any work, a directory holding a sweep unless ``overwrite`` (then the
    refit's ``best/`` run is moved aside by the runner, never deleted).

    Raises:
      SweepError: for a directory with a sweep and no ``overwrite``.
    """
    best = output_dir / BEST_DIR
    if not overwrite and ((output_dir / JSON_FILE).exists() or holds_run(best)):
        raise SweepError(f"{output_dir} already holds a sweep; use a new --output_dir, or "
                         f"--overwrite to replace it (its {BEST_DIR}/ run is moved aside to "
                         f"{BEST_DIR}.replaced-<timestamp>)")


def check_sweep(base: ml_collections.ConfigDict, space: Mapping[str, Any], *, search: str,
                budget: int | None, seed: int, output_dir: str | Path,
                overwrite: bool = False) -> list[Overrides]:
    """Every check of ``run_sweep`` that needs no data, without writing anything: the base
    config, the plan, each trial's config, the output directory. Returns the plan.

    Raises:
      SweepError, ConfigError: as ``run_sweep``.
    """
    task = get_task(base)
    check_config(base, task.name)
    plan = plan_trials(space, search, budget, seed)
    for overrides in plan:
        check_config(trial_config(base, overrides), task.name, data_given=True)
    check_output_dir(Path(output_dir), overwrite)
    return plan


def run_sweep(base: ml_collections.ConfigDict, space: Mapping[str, Any], *, search: str,
              budget: int | None, seed: int, output_dir: str | Path, overwrite: bool = False,
              on_trial: Callable[[Trial], None] | None = None) -> SweepResult:
    """Plans, runs, selects on validation, refits and tests; writes ``sweep.json`` and
    ``sweep.md`` into ``output_dir`` (atomically, also after each trial with
    ``"status": "running"``).

    Every trial's config is applied and checked before any training, so a typo in the space
    fails in seconds.

    Raises:
      SweepError: for a bad space or budget, or an output directory holding a sweep.
      ConfigError: for a base or trial config that cannot give a meaningful run.
      WorkdirError: for a ``best/`` workdir that the refit cannot use.
    """
    output_dir = Path(output_dir)
    task = get_task(base)
    plan = check_sweep(base, space, search=search, budget=budget, seed=seed,
                       output_dir=output_dir, overwrite=overwrite)
    monitor = task.monitor(base)
    mode = monitor_mode(monitor)

    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = task.prepare(base, output_dir)  # Once: ids/ and split/ saved for compare.py.
    prepare_seconds = time.perf_counter() - t0
    trials: list[Trial] = []
    for index, overrides in enumerate(plan):
        trials.append(run_trial(index, base, overrides, data))
        fileio.atomic_write_json(output_dir / JSON_FILE, {
            "status": "running", "monitor": monitor, "mode": mode, "planned": len(plan),
            "trials": [t.to_dict() for t in trials]})
        if on_trial is not None:
            on_trial(trials[-1])

    chosen = select(trials, mode)
    t0 = time.perf_counter()
    refit_run = train_and_evaluate(trial_config(base, chosen.overrides),
                                   output_dir / BEST_DIR, data=data, overwrite=overwrite)
    refit = {"workdir": str(output_dir / BEST_DIR), "val": validation_value(refit_run),
             "seconds": time.perf_counter() - t0, "test": test_metrics(refit_run.summary)}
    result = SweepResult(
        task=task.name, model=base.model.name, monitor=monitor, mode=mode, search=search,
        seed=seed, budget=budget, space=dict(space), trials=trials, chosen=chosen,
        refit=refit, trial_seconds=sum(t.seconds for t in trials),
        prepare_seconds=prepare_seconds)
    write_sweep(result, output_dir)
    return result


def write_sweep(result: SweepResult, output_dir: str | Path) -> None:
    """Writes ``sweep.json`` (``"status": "done"``) and ``sweep.md`` atomically."""
    output_dir = Path(output_dir)
    fileio.atomic_write_json(output_dir / JSON_FILE, {"status": "done", **result.to_dict()})
    fileio.atomic_write_text(output_dir / MARKDOWN_FILE, format_sweep(result) + "\n")


def format_sweep(result: SweepResult) -> str:
    """The Markdown report: every trial (chosen one marked), the budget used, and the chosen
    config's test metrics after the refit."""
    fields = list(result.space)
    lines = [f"# Sweep: {result.model} ({result.task} task), {result.search} search",
             "", f"Selection: best validation `{result.monitor}` ({result.mode}); test metrics "
             "are read only for the refitted chosen config.", "",
             "| trial | " + " | ".join(fields) + f" | {result.monitor} | best epoch | "
             "epochs | s | status |", "|" + "---|" * (len(fields) + 6)]
    for t in result.trials:
        mark = " ← chosen" if t.index == result.chosen.index else ""
        cells = [_cell(t.overrides.get(f, "")) for f in fields]
        lines.append(f"| {t.index} | " + " | ".join(cells) + f" | {t.value:.4f} | "
                     f"{_cell(t.best_epoch)} | {_cell(t.epochs_trained)} | {t.seconds:.1f} | "
                     f"{t.status}{mark} |")
    requested = "whole grid" if result.budget is None else str(result.budget)
    lines += ["", f"Budget used: {len(result.trials)} trials (requested: {requested}"
              + (f", seed {result.seed}" if result.search == "random" else "")
              + f"), {result.trial_seconds:.1f} s of trials; data prepared once in "
              f"{result.prepare_seconds:.1f} s; refit {result.refit['seconds']:.1f} s.", "",
              f"## Chosen config, refitted in `{result.refit['workdir']}`", "",
              f"Overrides: `{json.dumps(result.chosen.overrides)}`; validation "
              f"`{result.monitor}` {result.chosen.value:.4f} (refit "
              f"{result.refit['val']:.4f}).", "", "| test metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in result.refit["test"].items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


# The refit test metrics the budget table shows (every one is in budget_table.json): the
# accuracy metrics, not counts or beyond-accuracy figures, so the table stays readable.
HEADLINE_TEST_METRICS = ("test_rmse", "test_mae", "test_hr@*", "test_recall@*", "test_ndcg@*")


def format_budget_table(results: Mapping[str, SweepResult]) -> str:
    """One row per swept model (``--models``): the budget each used, its chosen overrides and
    validation value, and the refit's headline test metrics (``HEADLINE_TEST_METRICS``; columns:
    every such metric any model has)."""
    metrics = [k for k in dict.fromkeys(k for r in results.values() for k in r.refit["test"])
               if any(fnmatch.fnmatch(k.split(" ")[0], p) for p in HEADLINE_TEST_METRICS)]
    lines = ["| model | search | trials | trial s | chosen overrides | validation | "
             + " | ".join(metrics) + " |", "|" + "---|" * (6 + len(metrics))]
    for name, r in results.items():
        cells = [_number(r.refit["test"].get(m)) for m in metrics]
        lines.append(f"| {name} | {r.search} | {len(r.trials)} | {r.trial_seconds:.1f} | "
                     f"`{json.dumps(r.chosen.overrides)}` | {r.monitor} {r.chosen.value:.4f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
