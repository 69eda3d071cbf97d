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

Several processes (one per host or per GPU; docs/scaling_out.md has the launch commands): run
the same command in every process with ``--coordinator_address=host:port --num_processes=N
--process_id=i`` (or the ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID`` environment variables), or ``--distributed`` under SLURM, Open MPI or on a
Cloud TPU slice; the workdir must be the same directory for all. Process 0 prints and writes.
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
from recsys_jax.training import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the run.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Move a run already in --workdir aside to "
    "<workdir>.replaced-<timestamp> (never deleted) and start afresh.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.define_flags()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_startup()
    distributed.initialize_from_flags()  # Before any JAX computation; nothing with one process.
    logging.info("config:\n%s", _CONFIG.value)
    try:
        run = train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)
    except (ConfigError, WorkdirError, DivergenceError) as e:
        # Expected refusals: the message says what is wrong and how to proceed; no traceback.
        raise SystemExit(f"train.py: {type(e).__name__}: {e}") from e
    if not distributed.is_primary():
        return  # Process 0 reports (and wrote the files).
    print(run.task.headline(run.summary))
    for section in run.sections:
        if section.startswith(("## Against the rating baselines", "## Item embeddings")):
            print(section)
    print(f"report: {run.workdir / 'report.md'}")


if __name__ == "__main__":
    app.run(main)
