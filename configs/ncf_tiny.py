"""A tiny NCF run on synthetic data, for tests and smoke checks (seconds on a CPU).

Run:
  python experiments/train.py --config=configs/ncf_tiny.py --workdir=/tmp/ncf_tiny \
      --config.model.name=neumf
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """The ML-100K recipe shrunk: synthetic data, small towers, 2 epochs."""
    config = sibling_config(__file__, "ncf_ml100k")
    config.data.dataset = "synthetic"
    config.data.num_users = 60
    config.data.num_items = 80
    config.data.num_interactions = 1500
    config.model.dim = 4
    config.model.mlp_layers = (16, 8, 4)
    config.optimizer.lr = 1e-2
    config.training.batch_size = 64
    config.training.epochs = 2
    config.training.patience = 0
    config.evaluation.num_negatives = 20
    return config
