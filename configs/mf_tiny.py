"""A tiny MF run on synthetic data, for tests and smoke checks (seconds on a CPU).

Run:
  python experiments/train.py --config=configs/mf_tiny.py --workdir=/tmp/mf_tiny
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """The ML-100K recipe shrunk: synthetic data, dim 8, 3 epochs."""
    config = sibling_config(__file__, "mf_ml100k")
    config.data.dataset = "synthetic"
    config.data.num_users = 60
    config.data.num_items = 80
    config.data.num_interactions = 2000
    config.model.dim = 8
    config.optimizer.lr = 1e-2
    config.training.batch_size = 128
    config.training.epochs = 3
    config.training.patience = 2
    config.analysis.min_count = 5
    config.analysis.permutations = 100
    config.analysis.titles = ("Synthetic Item 3 (2000)",)
    return config
