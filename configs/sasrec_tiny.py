"""A tiny SASRec run on synthetic data, for tests and smoke checks (seconds on a CPU).

Run:
  python experiments/train.py --config=configs/sasrec_tiny.py --workdir=/tmp/sasrec_tiny \
      --config.loss.name=bce
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """The ML-100K recipe shrunk: synthetic data, a small model, 2 epochs."""
    config = sibling_config(__file__, "sasrec_ml100k")
    config.data.dataset = "synthetic"
    config.data.num_users = 60
    config.data.num_items = 80
    config.data.num_interactions = 1500
    config.model.max_len = 12
    config.model.dim = 8
    config.model.num_heads = 2
    config.optimizer.lr = 1e-2
    config.training.batch_size = 16
    config.training.epochs = 2
    config.training.patience = 0
    config.evaluation.num_negatives = 20
    return config
