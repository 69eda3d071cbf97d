r"""Trains and evaluates any task: the config's ``task`` picks rating, implicit or retrieval.

Usage:
  python experiments/train.py --config=configs/mf_ml100k.py --workdir=workdirs/mf_ml100k
  python experiments/train.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/gmf
  python experiments/train.py --config=configs/two_tower_ml100k.py \
      --workdir=workdirs/two_tower_ml100k --config.split.name=user_temporal

Rerunning with the same --workdir resumes after the last finished epoch, but only a run of
the same identity: a changed result-determining config key (split seed, learning rate, ...) is
refused, naming the keys. --overwrite moves an existing run aside to
``<workdir>.replaced-<timestamp>`` and starts afresh (nothing is deleted). One run per workdir
at a time. The files a run writes are listed in ``recsys_jax.tasks.runner`` and in each task's
module (``recsys_jax.tasks.rating``, ``.implicit``, ``.retrieval``); ``<workdir>/report.md``
sums up.
Metrics per epoch: ``metrics.jsonl`` and ``tensorboard --logdir <workdir>``.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from recsys_jax.console import quiet_startup
from recsys_jax.tasks.runner import (
    ConfigError,
    DivergenceError,
    WorkdirError,
    train_and_evaluate,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the run.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move a run already in --workdir aside to "
    "<workdir>.replaced-<timestamp> (never deleted) and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    logging.info("config:\n%s", _CONFIG.value)
    try:
        run = train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
    except (ConfigError, WorkdirError, DivergenceError) as e:
        # Expected refusals: the message says what is wrong and how to proceed; no traceback.
        raise SystemExit(f"train.py: {type(e).__name__}: {e}") from e
    print(run.task.headline(run.summary))
    for section in run.sections:
        if section.startswith(("## Against the rating baselines", "## Item embeddings")):
            print(section)
    print(f"report: {run.workdir / 'report.md'}")


if __name__ == "__main__":
    app.run(main)
