"""NCF on MovieLens-100K as implicit feedback: He et al. (2017)'s recipe, model set by name.

All ratings are positives; leave-one-out split (each user's last interaction is test, the one
before it validation); binary cross-entropy with 4 negatives per positive, resampled every epoch
on the device; Adam lr 1e-3; GMF dim 8, MLP layers (64, 32, 16, 8) (the paper's "8 predictive
factors"); embeddings ~ N(0, 0.01²). Early stopping on full-ranking validation NDCG@10. Test
metrics under both protocols: full ranking (HR/NDCG/Recall/... @10, @100) and the paper's
sampled protocol (held-out item + 99 sampled unseen items, HR/NDCG@10, labelled sampled-99).

Batch: ``training.batch_size`` counts *positives*; each step trains on batch_size × (1 + 4)
examples, so the default 64 is 320 examples per step, close to the paper's 256. Up to 100
epochs with patience 10 (an ML-100K epoch takes well under a second on a 2-core CPU).

Run (models: gmf | mlp | neumf | dot_mf):
  python experiments/train.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/gmf \
      --config.model.name=gmf
  python experiments/train.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/mlp \
      --config.model.name=mlp
  python experiments/train.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/neumf \
      --config.model.name=neumf
  # NeuMF from the pretrained GMF and MLP (α = 0.5), trained with plain SGD as in the paper:
  python experiments/train.py --config=configs/ncf_ml100k.py \
      --workdir=workdirs/ncf/neumf_pretrained --config.model.name=neumf \
      --config.model.pretrained.gmf_workdir=workdirs/ncf/gmf \
      --config.model.pretrained.mlp_workdir=workdirs/ncf/mlp \
      --config.optimizer.name=sgd --config.optimizer.lr=1e-3
  python experiments/train.py --config=configs/ncf_ml100k.py --workdir=workdirs/ncf/dot_mf \
      --config.model.name=dot_mf --config.model.dim=64
"""

import ml_collections
from ml_collections import config_dict

from recsys_jax.config_files import mesh_config


def get_config() -> ml_collections.ConfigDict:
    """The default NCF experiment (GMF)."""
    config = ml_collections.ConfigDict()
    config.task = "implicit"          # Key of recsys_jax.tasks.registry.TASKS.
    config.run_name = config_dict.placeholder(str)  # Label in comparisons (default: workdir).

    config.model = ml_collections.ConfigDict()
    config.model.name = "gmf"         # gmf | mlp | neumf | dot_mf
    config.model.dim = 8              # GMF / NeuMF-GMF factors; dot_mf embedding size.
    config.model.mlp_layers = (64, 32, 16, 8)  # mlp / NeuMF-MLP: input width, then layers.
    config.model.init_std = 0.01
    config.model.pretrained = ml_collections.ConfigDict()  # neumf only
    config.model.pretrained.gmf_workdir = config_dict.placeholder(str)
    config.model.pretrained.mlp_workdir = config_dict.placeholder(str)
    config.model.pretrained.alpha = 0.5

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"    # adam | adamw | adagrad | sgd
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "constant"
    config.optimizer.momentum = 0.0   # sgd
    # Embedding tables: "dense" (the optimizer above) or row-sparse, only the rows a step reads
    # (positives and sampled negatives): "lazy_adam" | "rowwise_adagrad" (docs/models/mf.md).
    config.optimizer.tables = "dense"

    config.training = ml_collections.ConfigDict()
    config.training.num_negatives = 4
    config.training.batch_size = 64   # Positives per step (× (1 + num_negatives) examples).
    config.training.epochs = 100
    config.training.patience = 10     # Epochs without improvement of `monitor`; 0 = never.
    config.training.monitor = "val_ndcg@10"   # val_<hr|ndcg|recall|...>@<k>, maximised.
    config.training.loss = "bce"      # bce (pointwise) | bpr (pairwise)
    # λ of the L2 on the rows each scored pair reads (dot_mf only; tasks/implicit_losses.py).
    config.training.l2_reg = 0.0
    config.training.val_protocol = "full"     # full | sampled
    config.training.seed = 0
    config.training.data_on_device = "auto"
    config.training.positive_set = "auto"     # auto | dense | sorted (negatives.py)

    # Devices: a (data, model) mesh; batches split over data, table rows over model; -1 = all
    # the devices the other axis leaves (docs/scaling_out.md). One device: nothing sharded.
    config.mesh = mesh_config()

    config.evaluation = ml_collections.ConfigDict()
    config.evaluation.ks = (10, 100)          # full ranking
    config.evaluation.sampled_ks = (10,)      # sampled protocol
    config.evaluation.num_negatives = 99      # sampled protocol: N
    config.evaluation.sample_seed = 0
    # Test users' inputs: "train+val" refits the user side on train + val positives, items
    # frozen, before the test (fold-in; docs/models/ncf.md); "train" does not.
    config.evaluation.test_user_inputs = "train+val"  # train+val | train
    config.evaluation.fold_in_epochs = 1      # Epochs of the fold-in refit (not tuned).

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
    config.split.name = "leave_one_out"  # leave_one_out | user_temporal | random | ...
    config.split.val_fraction = 0.1
    config.split.test_fraction = 0.1
    config.split.seed = 0
    config.split.holdout_k = config_dict.placeholder(int)
    # Order of a user's events with equal timestamps: "random" (drawn from split.seed) or
    # "item_id" (the larger id counts as later; the rule before the fair protocol).
    config.split.tie_order = "random"
    # k-core before splitting: keep users/items with at least this many events (0 or 1 = off).
    config.split.min_user_interactions = 0
    config.split.min_item_interactions = 0

    return config
