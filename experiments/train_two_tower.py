r"""Trains a two-tower retrieval model, builds its FAISS index and times retrieve().

Usage:
  python experiments/train_two_tower.py --config=configs/two_tower_ml100k.py \
      --workdir=workdirs/two_tower_ml100k
  python experiments/train_two_tower.py --config=configs/two_tower_ml100k.py \
      --workdir=workdirs/two_tower_nologq --config.loss.logq=False

Writes the files listed in ``recsys_jax.training.retrieval_experiment`` (``<workdir>/run`` is
the run for ``experiments/compare.py``) and prints test HR@100 and the retrieval latency.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from recsys_jax.training.checkpoints import quiet_orbax_logging
from recsys_jax.training.retrieval_experiment import run_two_tower_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory of the run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_orbax_logging()
    logging.info("config:\n%s", _CONFIG.value)
    s = run_two_tower_experiment(_CONFIG.value, _WORKDIR.value)
    lat = s["retrieve_latency_ms"]
    print(f"test HR@100 {s['test_hr@100']:.4f}  HR@10 {s['test_hr@10']:.4f}  "
          f"recall@100 {s['test_recall@100']:.4f}  NDCG@100 {s['test_ndcg@100']:.4f} "
          f"(best epoch {s['best_epoch']})")
    print(f"retrieve(k=100) over {s['num_items']} items, {s['index']['kind']}: "
          f"p50 {lat['p50_ms']:.2f} ms  p95 {lat['p95_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms; "
          f"batched {s['retrieve_batched_qps']:,.0f} queries/s; "
          f"recall@100 vs exact {s['index']['recall@100_vs_exact']:.4f}")


if __name__ == "__main__":
    app.run(main)
