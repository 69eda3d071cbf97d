r"""Trains a suite of runs over several seeds and writes mean ± std tables, one per split.

Usage:
  python experiments/seed_table.py --suite=experiments/suites/ncf_ml100k.json \
      --seeds=0,1,2 --output_dir=workdirs/fair/ncf
  python experiments/seed_table.py --suite=experiments/suites/two_tower_ml100k.json \
      --seeds=0,1,2 --output_dir=workdirs/fair/two_tower

The suite (see ``recsys_jax.tasks.seed_runs``) names the rows (config + overrides), the splits
and the metric columns. Each run gets ``<output_dir>/<split>/<row>/seed<N>`` (a normal run
directory, ready for ``compare.py --runs=.../run``); finished runs of the same identity are read
instead of retrained, so an interrupted command continues where it stopped. Writes
``<output_dir>/seed_table.json`` (every run's metrics) and ``seed_table.md`` (mean ± sample std
over the seeds and the median wall time of a run, per split).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging

from recsys_jax import fileio
from recsys_jax.console import quiet_startup
from recsys_jax.tasks import seed_runs

REPO = Path(__file__).resolve().parents[1]

_SUITE = flags.DEFINE_string("suite", None, "Suite JSON file.", required=True)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (set in the suite's seed_fields).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Parent of the runs and the tables.",
                                  required=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    logging.set_verbosity(logging.WARNING)  # One line per run, not per epoch.
    suite = seed_runs.load_suite(_SUITE.value)
    seeds = [int(s) for s in _SEEDS.value]
    root = Path(_OUTPUT_DIR.value)
    planned = seed_runs.plan_runs(suite, seeds, root, config_dir=REPO)

    def report(run, summary, reused):
        values = ", ".join(f"{label} {value:.4f}" for label, spec in suite["metrics"].items()
                           if (value := seed_runs.row_metric(summary, spec)) is not None)
        print(f"[{run.split}] {run.row} seed {run.seed}: {values}"
              f"{' (finished before)' if reused else ''}", flush=True)

    results = seed_runs.run_all(planned, on_run=report)
    tables = seed_runs.aggregate(results, suite["metrics"])
    labels = {row["name"]: row.get("label", row["name"]) for row in suite["rows"]}
    command = "python experiments/seed_table.py " + " ".join(sys.argv[1:])
    markdown = [f"# {Path(_SUITE.value).stem}: mean ± std over seeds "
                f"{', '.join(map(str, seeds))}\n\n`{command}`\n"]
    for split, rows in tables.items():
        markdown.append(f"## {split}\n\n"
                        + seed_runs.format_table(rows, suite["metrics"], labels) + "\n")
    text = "\n".join(markdown)
    fileio.atomic_write_json(root / "seed_table.json", {
        "command": command, "suite": suite, "seeds": seeds,
        "runs": [{"split": run.split, "row": run.row, "seed": run.seed,
                  "workdir": str(run.workdir),
                  "metrics": {label: seed_runs.row_metric(summary, spec)
                              for label, spec in {**suite["metrics"],
                                                  "wall s": "total_wall_time_s"}.items()}}
                 for run, summary in results]})
    fileio.atomic_write_text(root / "seed_table.md", text)
    print("\n" + text)


if __name__ == "__main__":
    app.run(main)
