"""Two-tower retrieval on MovieLens-100K, leave-one-out split.

User tower: training-history statistics + demographics + the position-weighted pool of the 10
most recent items; item tower: MiniLM title embedding + genres + release year. Each training
pair sees its user as of just before it (causal inputs). In-batch softmax with logQ correction
and accidental-hit removal, batch 2048, AdamW lr 2e-3, learnable temperature (init 0.07); early
stopping on validation recall@100 (full ranking). Then a FAISS index and retrieve() latency.
The settings were chosen on validation recall@100 (README, "Two-tower retrieval").

Run:
  python experiments/train.py --config=configs/two_tower_ml100k.py \
      --workdir=workdirs/two_tower_ml100k

Variants, e.g.
  --config.loss.logq=False --config.split.name=user_temporal --config.index.kind=hnsw
  --config.model.history_source=id_embedding --config.optimizer.tables=lazy_adam   (history from
      a learnt per-item table: a step's cost does not grow with the catalogue)
"""

import ml_collections
from ml_collections import config_dict

from recsys_jax.config_files import mesh_config


def get_config() -> ml_collections.ConfigDict:
    """The default two-tower experiment."""
    config = ml_collections.ConfigDict()
    config.task = "retrieval"         # Key of recsys_jax.tasks.registry.TASKS.
    config.run_name = config_dict.placeholder(str)  # Label in comparisons (default: workdir name).

    config.model = ml_collections.ConfigDict()
    config.model.name = "two_tower"
    config.model.hidden_dim = 256
    config.model.dim = 128
    config.model.temperature = 0.07   # Initial τ; learnt, kept in [1e-3, 1].
    config.model.history = True       # Pool the item-tower embeddings of recent train items.
    config.model.history_positions = True  # Learn a weight per history position (recency).
    # The pooled vectors: "item_tower" = the history items' item-tower embeddings (the tower runs
    # on them every step), "id_embedding" = a learnt per-item table (B × L row reads per step,
    # whatever the catalogue; with optimizer.tables="lazy_adam" only the rows read are updated).
    config.model.history_source = "item_tower"
    config.model.user_id_dim = 0      # Learnt id embeddings fed to the towers (0: off).
    config.model.item_id_dim = 0
    # Cap on the distinct items the item tower encodes per training step (0: the step's own
    # bound, batch × (history_len + 1) + negatives, or the catalogue if smaller). A step that
    # needs more than a lower cap stops training with an error; nothing is truncated.
    config.model.max_step_items = 0

    config.features = ml_collections.ConfigDict()
    config.features.titles = True     # MiniLM title embeddings (needs the `text` extra).
    config.features.text_model = "all-MiniLM-L6-v2"
    config.features.cache_dir = config_dict.placeholder(str)  # Default $RECSYS_JAX_DATA/...
    config.features.demographics = True
    config.features.activity = False  # When users/items had training events; item counts.
    config.features.history_len = 10  # Most recent training items pooled (model.history).
    # How a training pair's user is described: "causal" = by the user's training events before
    # that pair (the next-item task the temporal protocols test), "all_train" = by all of them.
    config.features.train_user_inputs = "causal"
    # Events test users are encoded from: "train+val" (val items are known when scoring test)
    # or "train". Training and validation always use train only.
    config.features.test_user_events = "train+val"

    config.loss = ml_collections.ConfigDict()
    config.loss.logq = True
    config.loss.remove_accidental_hits = True
    config.loss.num_random_negatives = 0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"
    config.optimizer.lr = 2e-3
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "constant"
    # Embedding tables (the history table, id embeddings): "dense" (the optimizer above, every
    # row every step) or "lazy_adam" (only the rows a step reads; adamw's decay stays decoupled).
    config.optimizer.tables = "dense"

    config.training = ml_collections.ConfigDict()
    config.training.batch_size = 2048
    config.training.epochs = 60
    config.training.patience = 8
    config.training.seed = 0
    config.training.min_rating = 0.0  # Every training event is a positive.
    config.training.monitor = "val_recall@100"  # val_<hr|ndcg|recall|...>@<k>, maximised.
    config.training.data_on_device = "auto"

    # Devices: a (data, model) mesh; batches split over data, table rows over model; -1 = all
    # the devices the other axis leaves (docs/scaling_out.md). One device: nothing sharded.
    config.mesh = mesh_config()

    config.index = ml_collections.ConfigDict()
    config.index.kind = "flat"        # flat | ivf | hnsw
    config.index.nlist = config_dict.placeholder(int)
    config.index.nprobe = 32
    # IVF coarse quantizer: radius (cells probed by u.c + radius_weight * cell radius) | l2 |
    # ip (the two earlier recipes); radius_weight is a search setting, like nprobe.
    config.index.quantizer = "radius"
    config.index.radius_weight = 0.5
    config.index.hnsw_m = 32
    config.index.ef_construction = 80
    config.index.ef_search = 128
    config.index.use_gpu = "auto"

    config.serving = ml_collections.ConfigDict()
    config.serving.num_queries = 1000  # Timed single queries.
    config.serving.batch_size = 256
    # Test users whose index recall@100 is measured against exact search (a seeded sample where
    # there are more: two searches of every test user cost as much as a full ranking).
    config.serving.recall_queries = 10_000

    config.data = ml_collections.ConfigDict()
    config.data.dataset = "ml-100k"
    config.data.data_dir = config_dict.placeholder(str)
    config.data.cache_dir = config_dict.placeholder(str)
    config.data.num_users = 200
    config.data.num_items = 300
    config.data.num_interactions = 5000
    config.data.seed = 0

    config.split = ml_collections.ConfigDict()
    config.split.name = "leave_one_out"
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
