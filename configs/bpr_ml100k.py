"""BPR (Rendle et al., 2009) on MovieLens-100K: dot-product MF trained with the pairwise loss.

The implicit task of configs/ncf_ml100k.py (leave-one-out split, all ratings positive, full
ranking and sampled-99 test, test users folded in from train + val) with model ``dot_mf``
(logit = μ + b_u + b_i + p_u·q_i, dim 64) and ``training.loss = "bpr"``: −log σ(s_ui − s_uj)
for each training positive (u, i) and one negative j drawn uniformly from u's non-positives,
redrawn every step (LearnBPR's sampling, in mini-batches). ``training.l2_reg`` = λ adds
λ·‖rows read‖² (the L2 of the rows each scored pair reads, tasks/implicit_losses.py); λ was
chosen on validation NDCG@10 from {0, 1e-4, 1e-3, 1e-2}: 0 (1e-4 ties it; docs/models/ncf.md,
"BPR").

Run:
  python experiments/train.py --config=configs/bpr_ml100k.py --workdir=workdirs/bpr_ml100k
  python experiments/sweep.py --config=configs/bpr_ml100k.py \
      --space='{"training.l2_reg": [0.0, 1e-4, 1e-3, 1e-2]}' --output_dir=workdirs/bpr_sweep
"""

import ml_collections

from recsys_jax.config_files import sibling_config


def get_config() -> ml_collections.ConfigDict:
    """Dot-product MF with the BPR loss and the per-pair row L2."""
    config = sibling_config(__file__, "ncf_ml100k")
    config.model.name = "dot_mf"
    config.model.dim = 64
    config.training.loss = "bpr"
    config.training.num_negatives = 1   # One sampled negative per positive (LearnBPR).
    config.training.batch_size = 256    # Positives (= pairs) per step.
    config.training.l2_reg = 0.0      # Chosen on validation; try 1e-4.
    return config
