"""ItemKNN (shrunk cosine, top-k neighbours per item) on MovieLens-100K as implicit feedback.

The NCF data and protocol (configs/ncf_ml100k.py): leave-one-out, test users scored from
their train + val events (similarities from train only), full ranking and sampled-99.

k and shrink were chosen on validation (docs/models/baselines.md):
  python experiments/sweep.py --config=configs/item_knn_ml100k.py --search=grid \
      --space=experiments/spaces/item_knn_ml100k.json --output_dir=workdirs/sweep/item_knn

Run:
  python experiments/train.py --config=configs/item_knn_ml100k.py \
      --workdir=workdirs/baselines/item_knn
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """ItemKNN with the neighbourhood size and shrinkage chosen on validation."""
    config = sibling_config(__file__, "ncf_ml100k")
    config.model = ml_collections.ConfigDict({
        "name": "item_knn",
        "k": 400,              # neighbours kept per item (chosen on validation)
        "shrink": 0.0,         # s_ij = x_i·x_j / (|x_i||x_j| + shrink) (chosen on validation)
        "recency_weight": 1.0,  # γ of the user rows (1 = binary)
        "max_items": 20_000,
    })
    return config
