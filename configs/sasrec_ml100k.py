"""SASRec (Kang & McAuley, 2018) on MovieLens-100K: next-item prediction, leave-one-out split.

All ratings are positives; each user's events in time order (ties by the split's seeded
order). Training rows: each user's training history cut into windows of ``max_len`` + 1 items,
a next-item target at every position. Validation users are encoded from their last ``max_len``
training items, test users from their last ``max_len`` train + validation items (never a test
event). Early stopping on full-ranking validation NDCG@10. Test: full ranking (HR/NDCG/...
@10, @100) and the paper's sampled protocol (the held-out item among 100 sampled unseen items,
labelled sampled-100; only for comparison with published numbers).

The paper's architecture (2 blocks, 1 head, d = 50, learnt positions, dropout) with L = 50: the
median ML-100K user has 63 training events, and with ``training.windows="all"`` every training
event after a user's first is a target whatever L. The learning rate and dropout were chosen on
validation NDCG@10 for each loss (docs/models/sasrec.md, "Tuning"): lr 3e-3, dropout 0.2.

Run (losses: softmax, in-batch with logQ correction | bce, the paper's, 128 windows a batch):
  python experiments/train.py --config=configs/sasrec_ml100k.py --workdir=workdirs/sasrec/softmax
  python experiments/train.py --config=configs/sasrec_ml100k.py:bce --workdir=workdirs/sasrec/bce
"""

import ml_collections
from ml_collections import config_dict

LOSSES = ("softmax", "bce")


def get_config(loss: str = "softmax") -> ml_collections.ConfigDict:
    """The default SASRec experiment; ``loss`` "bce" gives the paper's loss and batch."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    config = ml_collections.ConfigDict()
    config.task = "sequential"        # Key of recsys_jax.tasks.registry.TASKS.
    config.run_name = config_dict.placeholder(str)  # Label in comparisons (default: workdir).

    config.model = ml_collections.ConfigDict()
    config.model.name = "sasrec"
    config.model.max_len = 50         # L: items a user is encoded from (left-padded).
    config.model.dim = 50
    config.model.num_blocks = 2
    config.model.num_heads = 1
    config.model.dropout = 0.2

    config.loss = ml_collections.ConfigDict()
    config.loss.name = loss           # softmax (in-batch) | bce (one negative per position)
    config.loss.logq = True           # softmax: logQ correction (q = share of the targets)
    config.loss.remove_accidental_hits = True  # softmax
    config.loss.num_random_negatives = 0       # softmax: uniform extra candidates per batch

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"    # adam | adamw | adagrad | sgd
    config.optimizer.lr = 3e-3        # Chosen on validation from {1e-3, 3e-3}, both losses.
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.optimizer.tables = "dense"  # dense | lazy_adam | rowwise_adagrad (item table only)

    config.training = ml_collections.ConfigDict()
    # Windows per step. The softmax's logits are a square of side batch_size × max_len (800
    # here); the paper's bce used 128.
    config.training.batch_size = 16 if loss == "softmax" else 128
    # "all": the whole history cut into windows from the end (every event a target once);
    # "last": each user's most recent max_len + 1 training items (the paper's sampler).
    config.training.windows = "all"
    config.training.epochs = 400
    config.training.patience = 20     # Epochs without improvement of `monitor`; 0 = never.
    config.training.monitor = "val_ndcg@10"
    config.training.seed = 0
    config.training.data_on_device = "auto"
    config.training.positive_set = "auto"     # auto | dense | sorted (negatives.py)

    config.evaluation = ml_collections.ConfigDict()
    config.evaluation.ks = (10, 100)          # full ranking
    config.evaluation.sampled_ks = (10,)      # sampled protocol
    config.evaluation.num_negatives = 100     # sampled protocol: N (the SASRec paper's)
    config.evaluation.sample_seed = 0
    # Events test users are encoded from: "train+val" (equal information with the other
    # tasks' runs) or "train".
    config.evaluation.test_user_inputs = "train+val"

    config.implicit = ml_collections.ConfigDict()
    config.implicit.min_rating = config_dict.placeholder(float)  # None: every rating counts.

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "ml-100k"
    config.data.data_dir = config_dict.placeholder(str)
    config.data.cache_dir = config_dict.placeholder(str)
    config.data.num_users = 200       # "synthetic" only
    config.data.num_items = 300
    config.data.num_interactions = 5000
    config.data.seed = 0

    config.split = ml_collections.ConfigDict()
    config.split.name = "leave_one_out"  # leave_one_out | user_temporal | global_temporal
    config.split.val_fraction = 0.1
    config.split.test_fraction = 0.1
    config.split.seed = 0
    config.split.holdout_k = config_dict.placeholder(int)
    config.split.tie_order = "random"
    config.split.min_user_interactions = 0
    config.split.min_item_interactions = 0

    return config
