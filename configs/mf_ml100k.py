"""Matrix factorisation on MovieLens-100K: the seed's recipe.

dim 64, embeddings ~ N(0, 0.01²), Adam lr 1e-3 with weight decay 1e-5 (PyTorch-style, i.e. L2
added to the gradient; see recsys_jax/training/optimizers.py), MSE, batch 256, up to 50 epochs,
validation RMSE every epoch, early stopping with patience 5, random 80/10/10 split.

Run:
  python experiments/train.py --config=configs/mf_ml100k.py --workdir=workdirs/mf_ml100k

Override any field on the command line, e.g.
  --config.model.dim=128 --config.split.name=user_temporal --config.optimizer.name=adamw
  --config.optimizer.tables=lazy_adam   (row-sparse tables: only the rows a step reads)
"""

import ml_collections
from ml_collections import config_dict

from recsys_jax.config_files import mesh_config


def get_config() -> ml_collections.ConfigDict:
    """The default MF experiment."""
    config = ml_collections.ConfigDict()
    config.task = "rating"            # Key of recsys_jax.tasks.registry.TASKS.
    config.run_name = config_dict.placeholder(str)  # Label in comparisons (default: workdir).

    config.model = ml_collections.ConfigDict()
    config.model.name = "mf"          # Key of recsys_jax.models.registry.MODELS.
    config.model.dim = 64
    config.model.init_std = 0.01

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"    # adam | adamw | adagrad | sgd
    config.optimizer.lr = 1e-3
    config.optimizer.weight_decay = 1e-5
    config.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine | step
    config.optimizer.warmup_epochs = 1.0    # warmup_cosine
    config.optimizer.min_lr_ratio = 0.0     # cosine, warmup_cosine: final lr / lr
    config.optimizer.decay_rate = 0.5       # step: lr factor every decay_epochs
    config.optimizer.decay_epochs = 10
    config.optimizer.momentum = 0.0         # sgd
    config.optimizer.initial_accumulator = 0.1  # adagrad
    # Embedding tables: "dense" (the optimizer above, every row every step) or row-sparse, only
    # the rows a step reads: "lazy_adam" | "rowwise_adagrad" (docs/models/mf.md).
    config.optimizer.tables = "dense"

    config.training = ml_collections.ConfigDict()
    config.training.loss = "mse"      # mse | huber
    config.training.l2_reg = 0.0      # Per-example L2 on the rows used (classic SVD).
    config.training.batch_size = 256
    config.training.epochs = 50
    config.training.patience = 5      # Epochs without val RMSE improvement; 0 = never stop.
    config.training.monitor = "val_rmse"  # Selects the best epoch (rmse/mae: minimised).
    config.training.seed = 0
    config.training.data_on_device = "auto"  # auto | always | never
    config.training.eval_chunk_size = 65536

    # Devices: a (data, model) mesh; batches split over data, table rows over model; -1 = all
    # the devices the other axis leaves (docs/scaling_out.md). One device: nothing sharded.
    config.mesh = mesh_config()

    # Test users' inputs: "train+val" refits each user's vector and bias on their train + val
    # ratings, items frozen, before the test (fold-in; docs/models/mf.md); "train" does not.
    config.evaluation = ml_collections.ConfigDict()
    config.evaluation.test_user_inputs = "train+val"  # train+val | train
    config.evaluation.fold_in_epochs = 1      # Epochs of the fold-in refit (not tuned).

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "ml-100k"   # A MovieLens name, or "synthetic".
    config.data.data_dir = config_dict.placeholder(str)   # Extracted files, if already local.
    config.data.cache_dir = config_dict.placeholder(str)  # Default $RECSYS_JAX_DATA.
    # Size of the "synthetic" data set.
    config.data.num_users = 200
    config.data.num_items = 300
    config.data.num_interactions = 5000
    config.data.seed = 0

    config.split = ml_collections.ConfigDict()
    config.split.name = "random"      # random | global_temporal | user_temporal | leave_one_out
    config.split.val_fraction = 0.1
    config.split.test_fraction = 0.1
    config.split.seed = 0
    config.split.holdout_k = config_dict.placeholder(int)  # user_temporal: last k per user.
    # Order of a user's events with equal timestamps: "random" (drawn from split.seed) or
    # "item_id" (the larger id counts as later; the rule before the fair protocol).
    config.split.tie_order = "random"
    # k-core before splitting: keep users/items with at least this many events (0 or 1 = off).
    config.split.min_user_interactions = 0
    config.split.min_item_interactions = 0

    # Post-training look at the item embeddings (t-SNE, genre-cluster score, similar items).
    config.analysis = ml_collections.ConfigDict()
    config.analysis.enabled = True
    config.analysis.min_count = 20    # Only items with this many training ratings take part.
    config.analysis.neighbours = 10
    config.analysis.permutations = 1000
    config.analysis.titles = ("Star Wars (1977)", "Toy Story (1995)", "Fargo (1996)",
                              "Pulp Fiction (1994)")

    return config
