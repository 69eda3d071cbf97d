r"""Tunes any config with a fixed budget: grid or random search over config overrides, each
trial selected on validation only; the chosen config is refitted and tested.

Usage:
  python experiments/sweep.py --config=configs/mf_ml100k.py \
      --space='{"optimizer.lr": [1e-3, 3e-3], "model.dim": [32, 64]}' --search=grid \
      --output_dir=workdirs/sweep_mf
  python experiments/sweep.py --config=configs/ncf_ml100k.py --search=random --budget=20 \
      --seed=0 --space='{"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}, "model.dim": [16, 32]}' \
      --output_dir=workdirs/sweep_ncf

--space is JSON text or the path of a .json file or of a .py file defining SPACE. The data is
prepared once (saved as <output_dir>/ids and <output_dir>/split); every trial trains with early
stopping on the task's validation monitor and writes nothing; the trial with the best
validation value is refitted in <output_dir>/best (a normal run directory) and tested there.
Writes <output_dir>/sweep.json and sweep.md: every trial's overrides, validation value and wall
time, the budget used, and the chosen config's test metrics. For equal budgets across models,
run the command once per config with the same --budget (and --seed), or, for models of one
config, give --models=gmf,mlp,neumf: one sweep per model.name under <output_dir>/<model>, and
<output_dir>/budget_table.{md,json} with one row per model.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from recsys_jax import fileio
from recsys_jax.console import quiet_startup
from recsys_jax.tasks.runner import ConfigError, DivergenceError, WorkdirError
from recsys_jax.tasks.sweep import (
    SEARCHES,
    SweepError,
    SweepResult,
    Trial,
    check_sweep,
    format_budget_table,
    format_sweep,
    load_space,
    run_sweep,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (the base "
                                          "of every trial).", lock_config=True)
_SPACE = flags.DEFINE_string("space", None, "Search space: JSON {field: [values] or "
                             '{"log_uniform"|"uniform"|"int_uniform": [lo, hi]}}, or a .json '
                             "or .py (SPACE = {...}) file.")
_SEARCH = flags.DEFINE_enum("search", "grid", list(SEARCHES), "grid: every combination; "
                            "random: --budget distinct draws from --seed.")
_BUDGET = flags.DEFINE_integer("budget", None, "Number of trials (random: required; grid: "
                               "defaults to the grid size and may not be smaller).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random search's draws.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where sweep.json, sweep.md, ids/, "
                                  "split/ and the refitted best/ run go.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a sweep already in --output_dir "
                               "(its best/ run is moved aside, never deleted).")
_MODELS = flags.DEFINE_list("models", [], "Sweep each of these model.name values with the same "
                           "space and budget, into <output_dir>/<model>.")
flags.mark_flags_as_required(["config", "space", "output_dir"])


def _print_trial(trial: Trial) -> None:
    print(f"trial {trial.index}: {trial.overrides}  validation {trial.value:.4f}  "
          f"({trial.seconds:.1f}s, {trial.status})", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    logging.set_verbosity(logging.WARNING)  # One line per trial, not per epoch.
    try:
        space = load_space(_SPACE.value)
        if not _MODELS.value:
            print("\n" + format_sweep(_sweep(_CONFIG.value, space, _OUTPUT_DIR.value)))
            return
        configs = {name: _with_model(name) for name in _MODELS.value}
        for name, config in configs.items():  # Every model's plan checked before any work.
            check_sweep(config, space, search=_SEARCH.value, budget=_BUDGET.value,
                        seed=_SEED.value, output_dir=os.path.join(_OUTPUT_DIR.value, name),
                        overwrite=_OVERWRITE.value)
        results = {}
        for name, config in configs.items():
            results[name] = _sweep(config, space, os.path.join(_OUTPUT_DIR.value, name))
            print(f"\n## {name}\n\n" + format_sweep(results[name]), flush=True)
    except (SweepError, ConfigError, WorkdirError, DivergenceError) as e:
        raise SystemExit(f"sweep.py: {type(e).__name__}: {e}") from e
    table = format_budget_table(results)
    fileio.atomic_write_json(os.path.join(_OUTPUT_DIR.value, "budget_table.json"),
                             {name: r.to_dict() for name, r in results.items()})
    fileio.atomic_write_text(os.path.join(_OUTPUT_DIR.value, "budget_table.md"),
                             "# Equal-budget sweeps\n\n" + table + "\n")
    print("\n" + table)


def _with_model(name: str):
    config = _CONFIG.value.copy_and_resolve_references()
    with config.unlocked():
        config.model.name = name
    return config


def _sweep(config, space: dict, output_dir: str) -> SweepResult:
    return run_sweep(config, space, search=_SEARCH.value, budget=_BUDGET.value,
                     seed=_SEED.value, output_dir=output_dir, overwrite=_OVERWRITE.value,
                     on_trial=_print_trial)


if __name__ == "__main__":
    app.run(main)
