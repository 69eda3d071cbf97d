r"""Trains an implicit-feedback model (GMF, MLP, NeuMF, dot-product MF) and writes a run.

Usage:
  python experiments/train_ncf.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/gmf
  python experiments/train_ncf.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/neumf \
      --config.model.name=neumf --config.split.name=user_temporal --config.split.holdout_k=1

The model is ``--config.model.name``; see ``configs/ncf_ml100k.py`` for the NeuMF-with-
pretraining command. Rerunning with the same --workdir resumes after the last finished epoch.
Besides the files of ``recsys_jax.training.ncf_experiment`` the workdir gets ``ids/`` and
``split/``; compare runs with
``experiments/compare.py --runs=<workdir>/run,... --split=leave_one_out --k=10,100``.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from recsys_jax.training.checkpoints import quiet_orbax_logging
from recsys_jax.training.implicit_data import load_implicit_data
from recsys_jax.training.ncf_experiment import run_ncf_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_orbax_logging()
    config, workdir = _CONFIG.value, _WORKDIR.value
    logging.info("config:\n%s", config)
    os.makedirs(workdir, exist_ok=True)
    data = load_implicit_data(config, save_dir=workdir)
    summary = run_ncf_experiment(config, data, workdir,
                                 report_sections=[data.report_section])
    for label, values in summary["test"].items():
        print(f"test ({label}): " + "  ".join(
            f"{k} {v:.4f}" for k, v in values.items()
            if isinstance(v, float) and k.split("@")[0] in ("hr", "ndcg", "recall")))
    print(f"best epoch {summary['best_epoch']} of {summary['epochs_trained']}, "
          f"workdir {workdir}")


if __name__ == "__main__":
    app.run(main)
