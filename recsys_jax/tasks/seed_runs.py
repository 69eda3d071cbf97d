"""Multi-seed result tables: the same runs over several seeds, reported as mean ± std.

A *suite* (a JSON file, see ``experiments/suites/``) names the table's rows and columns:

  rows         ``[{"name": ..., "config": "configs/x.py[:arg]", "overrides": {...},
               "label": ...}, ...]`` (``label``, the name shown in the table, and
               ``overrides`` are optional), trained in this order (a row may load an
               earlier row's workdir, as pretrained NeuMF loads GMF and MLP)
  splits       split protocols (``split.name``); one table per split
  metrics      ``{"column label": "dotted.summary.path", ...}`` read from ``test_metrics.json``;
               a list of paths takes the first one a run's summary holds (tasks name their
               metrics differently: ``test.full.hr@10``, ``test_hr@10``), and a row whose
               summary holds none of them shows "—"
  seed_fields  config fields set to the seed (default ``["training.seed"]``: the model's init
               and shuffling; the split and its tie order stay those of ``split.seed``, so every
               seed is tested on the same events and per-user tests stay paired)

String override values may use ``{root}``, ``{split}`` and ``{seed}``, which are replaced by the
suite's output directory, the split and the seed (``"{root}/{split}/gmf/seed{seed}"``).

Every run has its own workdir, ``<root>/<split>/<row>/seed<seed>``, and is named after its row
(``run_name``, unless the row's overrides name it) in ``compare.py`` tables. A workdir that
already holds a finished run of the same identity (``run_identity``) is read, not retrained, so
an interrupted suite continues where it stopped; a workdir of another identity is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from recsys_jax.config_files import load_config_file
from recsys_jax.tasks.rating_search import apply_overrides
from recsys_jax.tasks.registry import get_task
from recsys_jax.tasks.run_identity import check_config_identity
from recsys_jax.tasks.runner import train_and_evaluate

SUMMARY_FILE = "test_metrics.json"
SUITE_KEYS = {"about", "rows", "splits", "metrics", "seed_fields"}
ROW_KEYS = {"name", "label", "config", "overrides"}
# Metrics where lower is better (the rest are maximised) when the best mean is marked.
LOWER_IS_BETTER = ("rmse", "mae")


class SuiteError(ValueError):
    """A suite file that cannot describe a table."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One training run of a suite: a row on one split with one seed."""

    split: str
    row: str
    seed: int
    workdir: Path
    config: ml_collections.ConfigDict


def load_suite(path: str | Path) -> dict[str, Any]:
    """Reads and checks a suite file (see the module docstring).

    Raises:
      SuiteError: for unknown keys, missing fields or duplicate row names.
    """
    try:
        suite = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SuiteError(f"cannot read suite {path}: {e}") from None
    problems = []
    if not isinstance(suite, dict):
        raise SuiteError(f"suite {path}: expected a JSON object")
    if unknown := set(suite) - SUITE_KEYS:
        problems.append(f"unknown keys {sorted(unknown)}")
    for key in ("rows", "splits", "metrics"):
        if not suite.get(key):
            problems.append(f"{key!r} is missing or empty")
    names = []
    for i, row in enumerate(suite.get("rows") or []):
        if not isinstance(row, dict) or not {"name", "config"} <= set(row) or set(row) - ROW_KEYS:
            problems.append(f"row {i}: expected keys name, config and optionally label, overrides")
            continue
        names.append(row["name"])
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"duplicate row names {duplicates}")
    if problems:
        raise SuiteError(f"suite {path}: " + "; ".join(problems))
    return suite


def _substitute(value: Any, fields: Mapping[str, Any]) -> Any:
    return value.format(**fields) if isinstance(value, str) else value


def plan_runs(suite: Mapping[str, Any], seeds: Sequence[int], root: str | Path, *,
              config_dir: str | Path = ".") -> list[PlannedRun]:
    """Every run of the suite in training order: split, then row, then seed.

    Raises:
      KeyError: for an override or seed field the config does not have.
    """
    root = Path(root)
    seed_fields = suite.get("seed_fields", ["training.seed"])
    runs = []
    for split in suite["splits"]:
        for row in suite["rows"]:
            base = load_config_file(Path(config_dir) / row["config"])
            for seed in seeds:
                fields = {"root": root, "split": split, "seed": seed}
                overrides = {k: _substitute(v, fields)
                             for k, v in row.get("overrides", {}).items()}
                overrides["split.name"] = split
                overrides.update({field: seed for field in seed_fields})
                if "run_name" in base and "run_name" not in overrides:
                    # The label in compare.py tables (the workdir's name, seed<N>, otherwise).
                    overrides["run_name"] = row["name"]
                runs.append(PlannedRun(split, row["name"], seed,
                                       root / split / row["name"] / f"seed{seed}",
                                       apply_overrides(base, overrides)))
    return runs


def finished_summary(run: PlannedRun) -> dict[str, Any] | None:
    """The summary of a finished run of the same identity in ``run.workdir``, else ``None``.

    Raises:
      WorkdirError: when the workdir holds a run of another configuration.
    """
    summary_file = run.workdir / SUMMARY_FILE
    if not run.workdir.exists():
        return None
    recorded = check_config_identity(run.workdir, get_task(run.config).name, run.config)
    if recorded is None or not summary_file.exists():
        return None
    return json.loads(summary_file.read_text())


def run_all(runs: Sequence[PlannedRun], *,
            on_run: Callable[[PlannedRun, dict[str, Any], bool], None] | None = None,
            ) -> list[tuple[PlannedRun, dict[str, Any]]]:
    """Trains (or reads, when already finished) every planned run, in order.

    ``on_run(run, summary, reused)`` is called after each.
    """
    results = []
    for run in runs:
        summary = finished_summary(run)
        reused = summary is not None
        if summary is None:
            summary = train_and_evaluate(run.config, run.workdir).summary
        results.append((run, summary))
        if on_run is not None:
            on_run(run, summary, reused)
    return results


def metric_value(summary: Mapping[str, Any], path: str) -> float:
    """A summary value by a dotted path whose parts may contain ``@`` and ``-``
    (``test.sampled-99.hr@10``).

    Raises:
      KeyError: naming the path when the summary lacks it.
    """
    value: Any = summary
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"summary has no {path!r} (missing {part!r})")
        value = value[part]
    return float(value)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One metric of one row over the seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


MetricSpec = str | Sequence[str]


def _paths(spec: MetricSpec) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)


def row_metric(summary: Mapping[str, Any], spec: MetricSpec) -> float | None:
    """The first of ``spec``'s paths that ``summary`` holds, or ``None`` when it holds none."""
    for path in _paths(spec):
        try:
            return metric_value(summary, path)
        except KeyError:
            continue
    return None


def aggregate(results: Sequence[tuple[PlannedRun, Mapping[str, Any]]],
              metrics: Mapping[str, MetricSpec]) -> dict[str, dict[str, dict[str, Cell | None]]]:
    """``{split: {row: {label: Cell or None}}}`` in the order the runs were planned; the label
    ``"wall s"`` holds each run's ``total_wall_time_s``. A row's cell is ``None`` when its
    summaries hold none of the metric's paths.

    Raises:
      KeyError: when no run at all holds a metric (a misspelt path), or a row holds it for
        some seeds only.
    """
    collected: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    specs = {**metrics, "wall s": "total_wall_time_s"}
    for run, summary in results:
        row = collected.setdefault(run.split, {}).setdefault(run.row, {})
        for label, spec in specs.items():
            row.setdefault(label, []).append(row_metric(summary, spec))
    for label, spec in specs.items():
        found = [v for rows in collected.values() for row in rows.values() for v in row[label]]
        if all(v is None for v in found):
            raise KeyError(f"no run's summary has metric {label!r} ({_paths(spec)})")
    table: dict[str, dict[str, dict[str, Cell | None]]] = {}
    for split, rows in collected.items():
        for name, row in rows.items():
            cells = table.setdefault(split, {}).setdefault(name, {})
            for label, values in row.items():
                if all(v is None for v in values):
                    cells[label] = None
                elif any(v is None for v in values):
                    raise KeyError(f"{split}/{name}: metric {label!r} missing for some seeds")
                else:
                    cells[label] = Cell(tuple(values))
    return table


def _lower_is_better(label: str, spec: MetricSpec) -> bool:
    leaves = [path.rsplit(".", 1)[-1] for path in _paths(spec)]
    return any(name in leaf for leaf in leaves for name in LOWER_IS_BETTER)


def format_table(rows: Mapping[str, Mapping[str, Cell | None]],
                 metrics: Mapping[str, MetricSpec], labels: Mapping[str, str] | None = None,
                 digits: int = 4) -> str:
    """A markdown table: one line per row, ``mean ± std`` per metric (the best mean in bold,
    "—" where a row has no value), then the median wall time of a run."""
    labels = labels or {}
    header = ["model", *metrics, "wall s (median)"]
    best = {}
    for label, spec in metrics.items():
        means = [cells[label].mean for cells in rows.values() if cells[label] is not None]
        best[label] = (min if _lower_is_better(label, spec) else max)(means) if means else None
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, cells in rows.items():
        out = [labels.get(name, name)]
        for label in metrics:
            cell = cells[label]
            if cell is None:
                out.append("—")
                continue
            text = f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f}"
            out.append(f"**{text}**" if math.isclose(cell.mean, best[label]) else text)
        out.append(f"{statistics.median(cells['wall s'].values):.0f}")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)
