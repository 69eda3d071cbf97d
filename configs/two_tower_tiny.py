"""A tiny two-tower run on synthetic data, for tests and smoke checks (seconds on a CPU).

Run:
  python experiments/train.py --config=configs/two_tower_tiny.py --workdir=/tmp/tt
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """The ML-100K recipe shrunk: synthetic data, no title model, small towers, 2 epochs."""
    config = sibling_config(__file__, "two_tower_ml100k")
    config.data.dataset = "synthetic"
    config.data.num_users = 60
    config.data.num_items = 80
    config.data.num_interactions = 2000
    config.features.titles = False
    config.features.history_len = 8
    config.model.hidden_dim = 16
    config.model.dim = 8
    config.training.batch_size = 128
    config.training.epochs = 2
    config.training.patience = 0
    config.training.monitor = "val_recall@10"
    config.serving.num_queries = 30
    config.serving.batch_size = 10
    return config
