r"""Tunes MF on ML-100K per split protocol, on validation RMSE only (test is never looked at).

Usage:
  python experiments/tune_mf.py --output_dir=workdirs/tune_mf
  python experiments/tune_mf.py --protocols=global_temporal --output_dir=/tmp/tune

For each protocol (seed-0 split, model seed 0) it scores, in order:
  1. references: the seed recipe (configs/mf_ml100k.py), and for global_temporal the same
     recipe with the mean-user fallback for unseen users;
  2. a grid: dimension × regulariser (whole-table weight decay and/or per-example L2), up to 100
     epochs with patience 5 (plus the mean-user fallback on global_temporal);
  3. one-at-a-time changes to the grid's winner: neighbouring regularisers, learning rate, batch
     size, cosine schedule, the unseen-item (and on global_temporal unseen-user) fallback.
Writes ``tune_<protocol>.json`` (every trial) and ``tune_<protocol>.md`` into --output_dir and
prints the ranking. The winners are copied into configs/mf_ml100k_tuned.py by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from absl import app, flags, logging

from recsys_jax import fileio
from recsys_jax.console import quiet_startup
from recsys_jax.tasks.rating import load_rating_data
from recsys_jax.tasks.rating_search import axis, format_trials, grid_configs, two_stage_search

_PROTOCOLS = flags.DEFINE_list("protocols", ["random", "user_temporal", "global_temporal"],
                               "Split protocols to tune.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/tune_mf", "Where results go.")

TUNED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mf_ml100k_tuned.py"

# Weight decay is Adam's L2-in-the-gradient on whole tables; l2_reg penalises the rows each
# rating uses (classic SVD). They regularise rare and frequent ids differently, so both kinds
# and one mix are searched.
REGULARISERS = [
    {"optimizer.weight_decay": 1e-5, "training.l2_reg": 0.0},
    {"optimizer.weight_decay": 1e-4, "training.l2_reg": 0.0},
    {"optimizer.weight_decay": 3e-4, "training.l2_reg": 0.0},
    {"optimizer.weight_decay": 1e-5, "training.l2_reg": 0.03},
    {"optimizer.weight_decay": 1e-5, "training.l2_reg": 0.05},
    {"optimizer.weight_decay": 1e-5, "training.l2_reg": 0.08},
    {"optimizer.weight_decay": 1e-4, "training.l2_reg": 0.05},
]
REFINEMENTS = [
    # Neighbours of the winner's regulariser (absolute values; no-ops are dropped).
    {"optimizer.weight_decay": 2e-4},
    {"training.l2_reg": 0.03},
    {"training.l2_reg": 0.08},
    {"optimizer.lr": 3e-4, "training.epochs": 200},
    {"optimizer.lr": 3e-3},
    {"training.batch_size": 1024, "optimizer.lr": 3e-3},
    {"optimizer.schedule": "cosine"},
    {"model.unseen_item": "mean"},
]


def search_space(protocol: str) -> dict[str, list[dict]]:
    """References, grid and refinements for one protocol."""
    cold_users = protocol == "global_temporal"  # The only protocol with unseen test users.
    fallback = [{"model.unseen_user": "mean"}] if cold_users else [{}]
    return {
        "references": [{}] + ([{"model.unseen_user": "mean"}] if cold_users else []),
        "grid": grid_configs([axis("model.dim", [32, 64, 128]), REGULARISERS,
                              [{"training.epochs": 100}], fallback]),
        "refinements": REFINEMENTS + ([{"model.unseen_user": "zero"}] if cold_users else []),
    }


def _seed_config(protocol: str):
    spec = importlib.util.spec_from_file_location("mf_ml100k_tuned", TUNED_CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed_config(protocol)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    logging.set_verbosity(logging.WARNING)  # One line per trial, not per epoch.
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    for protocol in _PROTOCOLS.value:
        base = _seed_config(protocol)
        data = load_rating_data(base)
        space = search_space(protocol)
        trials = two_stage_search(
            base, data, references=space["references"], grid=space["grid"],
            refinements=space["refinements"],
            on_trial=lambda t: print(f"[{protocol}] {t.stage:9s} val RMSE {t.val_rmse:.4f} "
                                     f"(epoch {t.scores['best_epoch']}, "
                                     f"{t.scores['seconds']:.1f}s) {t.overrides}", flush=True))
        table = format_trials(trials)
        stem = os.path.join(_OUTPUT_DIR.value, f"tune_{protocol}")
        fileio.atomic_write_json(stem + ".json", {
            "protocol": protocol, "selection": "validation RMSE, seed-0 split, model seed 0",
            "base_config": base.to_dict(), "best": trials[0].to_dict(),
            "trials": [t.to_dict() for t in trials]})
        fileio.atomic_write_text(stem + ".md", f"# MF tuning on `{protocol}` (validation "
                                 f"RMSE, best first)\n\n{table}\n")
        print(f"\n## {protocol}: {len(trials)} trials, best first\n\n{table}\n", flush=True)
        print(f"best for {protocol}: {json.dumps(trials[0].overrides)}  "
              f"val RMSE {trials[0].val_rmse:.4f}\n", flush=True)


if __name__ == "__main__":
    app.run(main)
