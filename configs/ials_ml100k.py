"""iALS on MovieLens-100K as implicit feedback: alternating least squares in JAX.

The NCF data and protocol (configs/ncf_ml100k.py): leave-one-out, test users' vectors solved
from their train + val events with the items fixed (one user step), full ranking and
sampled-99. 128 factors, 15 iterations, 3 conjugate-gradient steps per solve: the settings
of the `implicit` comparison (benchmarks/peers_implicit.py).

α and λ were chosen on validation (docs/models/baselines.md; Rendle et al.'s weighting,
experiments/spaces/ials_ml100k_rendle.json, scored lower):
  python experiments/sweep.py --config=configs/ials_ml100k.py --search=grid \
      --space=experiments/spaces/ials_ml100k.json --output_dir=workdirs/sweep/ials

Run:
  python experiments/train.py --config=configs/ials_ml100k.py --workdir=workdirs/baselines/ials
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """iALS with Hu et al.'s weighting (α₀ = 1, ν = 0), α and λ chosen on validation."""
    config = sibling_config(__file__, "ncf_ml100k")
    config.model = ml_collections.ConfigDict({
        "name": "ials",
        "dim": 128,
        "iterations": 15,
        "alpha": 2.0,               # α, weight of an observed pair (chosen on validation)
        "unobserved_weight": 1.0,   # α₀, weight of every unobserved pair
        "l2": 10.0,                 # λ (chosen on validation)
        "reg_exponent": 0.0,        # ν: λ_u = λ (|I_u| + α₀|I|)^ν
        "solver": "cg",             # cg | exact
        "cg_steps": 3,
        "init_std": 0.1,            # factors ~ N(0, init_std² / dim)
        "sampled_dots": "auto",     # auto | dense | gather
    })
    return config
