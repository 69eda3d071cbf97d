r"""Trains a rating model (MF by default) and writes a complete run into --workdir.

Usage:
  python experiments/train_mf.py --config=configs/mf_ml100k.py --workdir=workdirs/mf_ml100k
  python experiments/train_mf.py --config=configs/mf_ml100k.py --workdir=workdirs/mf_d128 \
      --config.model.dim=128 --config.split.name=user_temporal

Rerunning with the same --workdir resumes after the last finished epoch. Besides the files of
``recsys_jax.training.rating_experiment`` the workdir gets ``ids/`` (the id mapping), ``split/``
(the split and its leakage report), ``comparison/`` (test RMSE/MAE against the rating
baselines, with CIs and paired tests) and ``run/`` (the model in the evaluation suite's run
format, for ranking comparisons).
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from recsys_jax.analysis.item_report import analyse_item_embeddings
from recsys_jax.fileio import load_npy
from recsys_jax.training.checkpoints import quiet_orbax_logging
from recsys_jax.training.rating_comparison import (compare_with_rating_baselines,
                                                   save_ranking_run)
from recsys_jax.training.rating_data import load_rating_data
from recsys_jax.training.rating_experiment import append_report_section, run_rating_experiment

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
    prepared = load_rating_data(config, save_dir=workdir)
    summary = run_rating_experiment(config, prepared.data, workdir,
                                    report_sections=[prepared.report_section])

    name = os.path.basename(os.path.normpath(workdir))
    table = compare_with_rating_baselines(
        prepared.data, load_npy(os.path.join(workdir, "test_predictions.npy")),
        os.path.join(workdir, "comparison"), model_name=name)
    append_report_section(workdir, "## Against the rating baselines\n\n" + table)
    arrays = {stem: load_npy(os.path.join(workdir, f"{stem}.npy"))
              for stem in ("user_embeddings", "item_embeddings", "item_bias", "user_seen",
                           "item_seen")}
    save_ranking_run(os.path.join(workdir, "run"), arrays, name=name, model=config.model.name,
                     dataset=prepared.dataset, split_fingerprint=prepared.split_fingerprint,
                     split_protocol=prepared.split_protocol,
                     metadata={"config": config.to_dict(), "test_rmse": summary["test_rmse"]})
    print(f"test RMSE {summary['test_rmse']:.4f}  MAE {summary['test_mae']:.4f}  "
          f"(best epoch {summary['best_epoch']}, {summary['epochs_trained']} epochs, "
          f"workdir {workdir})")
    print(table)
    if config.get("analysis") and config.analysis.enabled and prepared.items is not None:
        train_counts = np.bincount(prepared.data.train["item"], minlength=prepared.data.num_items)
        analysis = analyse_item_embeddings(
            arrays["item_embeddings"], prepared.items, train_counts, workdir,
            titles=tuple(config.analysis.titles), min_count=config.analysis.min_count,
            k=config.analysis.neighbours, n_permutations=config.analysis.permutations,
            seed=config.training.seed)
        append_report_section(workdir, "## Item embeddings\n\n![t-SNE](tsne_items.png)\n\n"
                              "```\n" + analysis.format() + "\n```")
        print(analysis.format())


if __name__ == "__main__":
    app.run(main)
