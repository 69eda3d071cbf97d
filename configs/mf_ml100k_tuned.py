"""Matrix factorisation on MovieLens-100K, tuned per split protocol on validation RMSE.

Select the protocol after a colon (default ``random``):
  python experiments/train.py --config=configs/mf_ml100k_tuned.py:global_temporal \
      --workdir=workdirs/mf_ml100k_tuned_global_temporal

The settings below were chosen by
  python experiments/tune_mf.py --output_dir=workdirs/tune_mf
which scores every candidate on the validation part of the seed-0 split only (never on test);
TUNED_EVIDENCE gives the validation RMSE of the winner next to the seed recipe's.
"""

from typing import Any

import ml_collections

from recsys_jax.config_files import sibling_config

PROTOCOLS = ("random", "user_temporal", "global_temporal")

# Winners of experiments/tune_mf.py (workdirs/tune_mf/tune_<protocol>.json), ~30 trials each.
# Common to all three: dim 32 and *both* regularisers (whole-table weight decay damps rarely
# seen rows, per-example L2 penalises rows in proportion to their use), up to 100 epochs.
TUNED: dict[str, dict[str, Any]] = {
    "random": {"model.dim": 32, "optimizer.weight_decay": 1e-4, "training.l2_reg": 0.05,
               "training.epochs": 100, "model.unseen_item": "mean"},
    "user_temporal": {"model.dim": 32, "optimizer.weight_decay": 1e-4, "training.l2_reg": 0.05,
                      "training.epochs": 100, "model.unseen_item": "mean"},
    # 85% of validation (86% of test) events come from users unseen in training: the mean-user
    # fallback matters more than anything else here (seed recipe 1.0703 -> 1.0141 with it).
    "global_temporal": {"model.dim": 32, "optimizer.weight_decay": 1e-5,
                        "training.l2_reg": 0.05, "training.epochs": 100,
                        "model.unseen_user": "mean", "model.unseen_item": "mean"},
}

# Validation RMSE (seed-0 split, model seed 0) of the seed recipe and of the tuned settings,
# from workdirs/tune_mf/tune_<protocol>.json. Re-tuned under the fair protocol (ties in time
# ordered at random; 2026-12-01, workdirs/fair/tune_mf): global_temporal gives the same values;
# on user_temporal the split changed (seed recipe 0.9503, these settings 0.9474) and the top
# trial, l2_reg 0.03 without the item fallback, led by 0.0001, so the settings were kept.
# Differences below ~0.001 between the top trials
# are within noise (e.g. unseen_item="mean" won by 0.0002-0.0004 where <1.5% of events are
# from unseen items).
TUNED_EVIDENCE: dict[str, dict[str, float]] = {
    "random": {"seed_recipe": 0.9079, "tuned": 0.8978},
    "user_temporal": {"seed_recipe": 0.9490, "tuned": 0.9424},
    "global_temporal": {"seed_recipe": 1.0703, "seed_recipe_mean_user": 1.0141,
                        "tuned": 1.0128, "tuned_zero_user_fallback": 1.0246},
}


def seed_config(protocol: str = "random") -> ml_collections.ConfigDict:
    """The seed recipe (configs/mf_ml100k.py) on ``protocol``, with the cold-start fields
    spelt out at their defaults so searches and overrides can name them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    config = sibling_config(__file__, "mf_ml100k")
    config.model.unseen_user = "zero"  # zero | mean (see recsys_jax/models/mf.py)
    config.model.unseen_item = "zero"
    config.split.name = protocol
    return config


def get_config(protocol: str = "random") -> ml_collections.ConfigDict:
    """The tuned recipe for ``protocol`` (``random``, ``user_temporal``, ``global_temporal``)."""
    config = seed_config(protocol or "random")
    for key, value in TUNED[config.split.name].items():
        *path, leaf = key.split(".")
        block = config
        for name in path:
            block = block[name]
        block[leaf] = value
    return config
