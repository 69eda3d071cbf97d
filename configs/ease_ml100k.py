"""EASE (Steck 2019) on MovieLens-100K as implicit feedback: the NCF data and protocol.

Leave-one-out split, all ratings positives, test users scored from their train + val events
(B fitted on train only), full ranking and sampled-99 (configs/ncf_ml100k.py). Closed form:
no epochs, optimizer or negatives (those fields are inherited and unused).

λ (``model.l2``) and the recency weight were chosen on validation (docs/models/baselines.md):
  python experiments/sweep.py --config=configs/ease_ml100k.py --search=grid \
      --space=experiments/spaces/ease_ml100k.json --output_dir=workdirs/sweep/ease

Run (plain, and with recency-weighted user rows):
  python experiments/train.py --config=configs/ease_ml100k.py --workdir=workdirs/baselines/ease
  python experiments/train.py --config=configs/ease_ml100k.py:recency \
      --workdir=workdirs/baselines/ease_recency
"""

import ml_collections

from recsys_jax.config_files import sibling_config

# Chosen on ML-100K validation HR/NDCG@10 (workdirs/sweep/ease; docs/models/baselines.md).
PLAIN = {"l2": 100.0, "recency_weight": 1.0}
RECENCY = {"l2": 500.0, "recency_weight": 0.8}


def get_config(variant: str = "plain") -> ml_collections.ConfigDict:
    """EASE with binary user rows (``plain``) or recency-weighted ones (``recency``)."""
    if variant not in ("plain", "recency"):
        raise ValueError(f"variant must be 'plain' or 'recency', got {variant!r}")
    config = sibling_config(__file__, "ncf_ml100k")
    settings = PLAIN if variant == "plain" else RECENCY
    config.model = ml_collections.ConfigDict({
        "name": "ease",
        "l2": settings["l2"],                        # λ, the ridge on B
        "recency_weight": settings["recency_weight"],  # γ: an event weighs γ^(later timestamps)
        "max_items": 20_000,                         # refuse larger catalogues (dense I × I)
    })
    return config
