"""Config checks before any work: every value that cannot give a meaningful run is refused.

``check_config(config, task)`` runs first in ``train_and_evaluate``, before the workdir is
touched or data is loaded. It collects every problem (not just the first) and raises one
``ConfigError`` naming each key, its value and what is allowed. Keys a config does not have are
not checked (a task may not use them); the keys in ``REQUIRED`` must be present.

Checked: learning rate finite and > 0, epochs ≥ 1, sizes ≥ 1, fractions in (0, 1) with room
left for training, names that must be known (task, model, optimizer, schedule, loss, split,
data set, index kind, ...), the task's own settings, and row-sparse tables
(``optimizer.tables``) only where they are served exactly (a model that declares tables; for
the two-tower, a history table or id embeddings; ``adamw``'s decoupled decay only with
``lazy_adam``, which applies it decoupled), and the device mesh (``mesh.data`` ×
``mesh.model`` must be the visible devices, and the data axis must divide
``training.batch_size``). The modules that use the values keep their own checks; this one only
makes sure they fail before any work, not after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from recsys_jax.data.movielens import MOVIELENS_NAMES
from recsys_jax.data.sequences import WINDOWS
from recsys_jax.data.splits import PROTOCOLS, TIE_ORDERS
from recsys_jax.evaluation.results import FULL_PROTOCOL
from recsys_jax.models.ials import SAMPLED_DOTS, SOLVERS
from recsys_jax.models.registry import MODELS, build_model
from recsys_jax.models.two_tower import HISTORY_SOURCES
from recsys_jax.retrieval.index import IVF_QUANTIZERS, cpu_only
from recsys_jax.retrieval.index import KINDS as INDEX_KINDS
from recsys_jax.tasks.base import monitor_mode, monitor_parts
from recsys_jax.tasks.fold_in import TEST_USER_INPUTS
from recsys_jax.tasks.implicit_losses import IMPLICIT_LOSSES
from recsys_jax.tasks.negatives import KINDS as POSITIVE_SET_KINDS
from recsys_jax.tasks.rating import RATING_LOSSES
from recsys_jax.tasks.sequential import SEQUENTIAL_PROTOCOLS
from recsys_jax.tasks.sequential_losses import SEQUENCE_LOSSES
from recsys_jax.training import sharding
from recsys_jax.training.optimizers import OPTIMIZERS, SCHEDULES, TABLE_OPTIMIZERS
from recsys_jax.training.tables import has_tables

Check = Callable[[Any], str | None]  # value -> what is wrong, or None

REQUIRED = ("model.name", "optimizer.name", "optimizer.lr", "training.batch_size",
            "training.epochs", "training.seed")


class ConfigError(ValueError):
    """Config values that cannot give a meaningful run (each problem names its key)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def integer(low: int) -> Check:
    """An integer ≥ ``low``."""
    def check(value):
        if not _is_int(value) or value < low:
            return f"must be an integer >= {low}"
        return None
    return check


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> Check:
    """A finite number in the interval given (open or closed at each end)."""
    left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    where = f" in {left or '(-inf'}, {right or 'inf)'}"

    def check(value):
        if not _is_real(value) or not math.isfinite(value):
            return "must be a finite number" + (where if low is not None or high is not None
                                                else "")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        return f"must be{where}" if too_low or too_high else None
    return check


def one_of(options: Sequence[Any] | Callable[[], Sequence[Any]]) -> Check:
    """One of ``options`` (a callable is read when checking, for registries)."""
    def check(value):
        known = options() if callable(options) else options
        return None if value in known else f"must be one of {sorted(known, key=str)}"
    return check


def integers(low: int) -> Check:
    """A non-empty sequence of integers ≥ ``low``."""
    def check(value):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value \
                or not all(_is_int(v) and v >= low for v in value):
            return f"must be a non-empty list of integers >= {low}"
        return None
    return check


def optional(check: Check) -> Check:
    """``None``, or a value that passes ``check``."""
    return lambda value: None if value is None else check(value)


# Keys every task may have.
COMMON: dict[str, Check] = {
    "model.name": one_of(lambda: MODELS),
    "model.dim": integer(1),
    "model.hidden_dim": integer(1),
    "model.mlp_layers": integers(1),
    "model.init_std": real(0),
    "model.temperature": real(0, low_open=True),
    "model.user_id_dim": integer(0),
    "model.item_id_dim": integer(0),
    "optimizer.name": one_of(OPTIMIZERS),
    "optimizer.lr": real(0, low_open=True),
    "optimizer.weight_decay": real(0),
    "optimizer.schedule": one_of(SCHEDULES),
    "optimizer.warmup_epochs": real(0),
    "optimizer.min_lr_ratio": real(0, 1),
    "optimizer.decay_rate": real(0, 1, low_open=True),
    "optimizer.decay_epochs": integer(1),
    "optimizer.momentum": real(0, 1, high_open=True),
    "optimizer.initial_accumulator": real(0),
    "optimizer.tables": one_of(TABLE_OPTIMIZERS),
    "training.epochs": integer(1),
    "training.batch_size": integer(1),
    "training.patience": integer(0),
    "training.seed": integer(0),
    "training.data_on_device": one_of(("auto", "always", "never")),
    "training.eval_chunk_size": integer(1),
    "mesh.data": integer(-1),
    "mesh.model": integer(-1),
}

# The data and split blocks (not checked when the caller passes prepared data).
DATA: dict[str, Check] = {
    "data.dataset": one_of(("synthetic", *MOVIELENS_NAMES)),
    "data.num_users": integer(1),
    "data.num_items": integer(1),
    "data.num_interactions": integer(1),
    "data.seed": integer(0),
    "split.name": one_of(PROTOCOLS),
    "split.seed": integer(0),
    "split.holdout_k": optional(integer(1)),
    "split.tie_order": one_of(TIE_ORDERS),
    "split.min_user_interactions": integer(0),
    "split.min_item_interactions": integer(0),
}

# Test-time user inputs of the tasks that fold in (tasks.fold_in).
FOLD_IN: dict[str, Check] = {
    "evaluation.test_user_inputs": one_of(TEST_USER_INPUTS),
    "evaluation.fold_in_epochs": integer(1),
}

# Keys of the tasks that rank implicit positives (implicit, sequential): their test
# protocols and which ratings count as positives.
_IMPLICIT_RANKING_KEYS: dict[str, Check] = {
    "evaluation.ks": integers(1),
    "evaluation.sampled_ks": integers(1),
    "evaluation.num_negatives": integer(1),
    "evaluation.sample_seed": integer(0),
    "implicit.min_rating": optional(real()),
}
TASK_KEYS: dict[str, dict[str, Check]] = {
    "rating": {
        "training.loss": one_of(tuple(RATING_LOSSES)),
        "training.l2_reg": real(0),
        **FOLD_IN,
    },
    "implicit": {
        **FOLD_IN,
        "training.loss": one_of(tuple(IMPLICIT_LOSSES)),
        "training.l2_reg": real(0),
        "training.num_negatives": integer(1),
        "training.val_protocol": one_of((FULL_PROTOCOL, "sampled")),
        "training.positive_set": one_of(("auto", *POSITIVE_SET_KINDS)),
        **_IMPLICIT_RANKING_KEYS,
        "model.pretrained.alpha": real(0, 1),
        # Models fitted without gradients (EASE, ItemKNN, iALS; docs/models/baselines.md).
        "model.l2": real(0, low_open=True),
        "model.recency_weight": real(0, 1, low_open=True),
        "model.max_items": integer(1),
        "model.k": integer(1),
        "model.shrink": real(0),
        "model.iterations": integer(0),
        "model.alpha": real(0, low_open=True),
        "model.unobserved_weight": real(0),
        "model.reg_exponent": real(0),
        "model.solver": one_of(SOLVERS),
        "model.cg_steps": integer(1),
        "model.sampled_dots": one_of(SAMPLED_DOTS),
        "model.max_dense_scores": integer(1),
    },
    "sequential": {
        "evaluation.test_user_inputs": one_of(TEST_USER_INPUTS),
        "split.name": one_of(SEQUENTIAL_PROTOCOLS),
        "model.max_len": integer(1),
        "model.num_blocks": integer(1),
        "model.num_heads": integer(1),
        "model.dropout": real(0, 1, high_open=True),
        "loss.name": one_of(SEQUENCE_LOSSES),
        "loss.num_random_negatives": integer(0),
        "training.windows": one_of(WINDOWS),
        "training.positive_set": one_of(("auto", *POSITIVE_SET_KINDS)),
        **_IMPLICIT_RANKING_KEYS,
    },
    "retrieval": {
        "features.history_len": integer(0),
        "model.max_step_items": integer(0),
        "model.history_source": one_of(HISTORY_SOURCES),
        "features.train_user_inputs": one_of(("causal", "all_train")),
        "features.test_user_events": one_of(("train", "train+val")),
        "loss.num_random_negatives": integer(0),
        "training.min_rating": real(),
        "index.kind": one_of(INDEX_KINDS),
        "index.nlist": optional(integer(1)),
        "index.nprobe": integer(1),
        "index.quantizer": one_of(IVF_QUANTIZERS),
        "index.radius_weight": real(0),
        "index.hnsw_m": integer(1),
        "index.ef_construction": integer(1),
        "index.ef_search": integer(1),
        "index.use_gpu": one_of(("auto", "never", "always")),
        "serving.num_queries": integer(1),
        "serving.batch_size": integer(1),
        "serving.recall_queries": integer(1),
    },
}

# Split protocols that cut by fractions (user_temporal only without holdout_k).
_FRACTION_PROTOCOLS = ("random", "global_temporal", "user_temporal")
_MISSING = object()


def _lookup(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _problem(key: str, value: Any, what: str) -> str:
    return f"{key} = {value!r} {what}"


def _split_problems(tree: Mapping[str, Any]) -> list[str]:
    name = _lookup(tree, "split.name")
    holdout_k = _lookup(tree, "split.holdout_k")
    problems = []
    if holdout_k not in (None, _MISSING) and name != "user_temporal":
        problems.append(_problem("split.holdout_k", holdout_k,
                                 f"applies only to split.name='user_temporal', not {name!r}"))
    if name not in _FRACTION_PROTOCOLS or (name == "user_temporal"
                                           and holdout_k not in (None, _MISSING)):
        return problems
    fractions = {}
    for key in ("split.val_fraction", "split.test_fraction"):
        value = _lookup(tree, key)
        if value is _MISSING:
            continue
        what = real(0, 1, low_open=True, high_open=True)(value)
        if what:
            problems.append(_problem(key, value, what + f" for split.name={name!r}"))
        else:
            fractions[key] = value
    if len(fractions) == 2 and sum(fractions.values()) >= 1:
        problems.append(f"split.val_fraction + split.test_fraction = "
                        f"{sum(fractions.values()):g} must be < 1 so training keeps rows")
    return problems


def _monitor_problems(tree: Mapping[str, Any], task: str) -> list[str]:
    monitor = _lookup(tree, "training.monitor")
    if monitor in (None, _MISSING):
        return []
    try:
        (monitor_mode if task == "rating" else monitor_parts)(monitor)
    except (ValueError, TypeError, AttributeError) as e:
        return [_problem("training.monitor", monitor, f"is not a monitor name: {e}")]
    return []


def _head_problems(tree: Mapping[str, Any], task: str) -> list[str]:
    """Attention heads must split the model width evenly (the sequential task's models)."""
    dim, heads = _lookup(tree, "model.dim"), _lookup(tree, "model.num_heads")
    if task != "sequential" or not (_is_int(dim) and _is_int(heads)) or heads < 1 \
            or dim % heads == 0:
        return []
    return [_problem("model.dim", dim, f"must be a multiple of model.num_heads = {heads}")]


def _declares_tables(model_config: Mapping[str, Any]) -> bool | None:
    """Whether the registry's model for ``model_config`` declares tables (``Table``), asked of
    the model built on a one-user, one-item id space with no training rows (as ``load_model``
    builds one); ``None`` when it cannot be built so (the runner asks the real model)."""
    empty = {"user": np.zeros(0, np.int32), "item": np.zeros(0, np.int32),
             "rating": np.zeros(0, np.float32)}
    try:
        model = build_model(model_config, num_users=1, num_items=1, train=empty,
                            rngs=nnx.Rngs(0))
    except Exception:  # Needs task inputs (features=) or a valid config: checked elsewhere.
        return None
    return has_tables(model)


def _two_tower_tables(model_config: Mapping[str, Any]) -> bool:
    """Whether a two-tower built from ``model_config`` declares a ``Table`` (its builder needs
    features, so ``_declares_tables`` cannot ask it)."""
    history = bool(model_config.get("history", False)) \
        and model_config.get("history_source", "item_tower") == "id_embedding"
    return history or any(_is_int(model_config.get(k, 0)) and model_config.get(k, 0) > 0
                          for k in ("user_id_dim", "item_id_dim"))


def _table_problems(tree: Mapping[str, Any], task: str) -> list[str]:
    """Row-sparse tables (``optimizer.tables``) where they cannot be served exactly."""
    tables = _lookup(tree, "optimizer.tables")
    if tables in (_MISSING, "dense") or tables not in TABLE_OPTIMIZERS:
        return []
    what = f"optimizer.tables = {tables!r}"
    problems = []
    model = _lookup(tree, "model")
    if task == "retrieval" and isinstance(model, Mapping) and model.get("name") == "two_tower" \
            and not _two_tower_tables(model):
        problems.append(f"{what} needs tables to update row-sparsely; this two-tower declares "
                        "none (the towers are dense layers): set model.history_source="
                        "'id_embedding' with model.history=True, or model.user_id_dim / "
                        "item_id_dim > 0, or use 'dense'")
    decay = _lookup(tree, "optimizer.weight_decay")
    if _lookup(tree, "optimizer.name") == "adamw" and _is_real(decay) and decay > 0 \
            and tables != "lazy_adam":  # lazy_adam decouples it as adamw does.
        problems.append(f"{what} applies optimizer.weight_decay as L2 in the gradient of the "
                        "rows read, optimizer.name = 'adamw' decouples it: one weight_decay "
                        "would mean two things; use optimizer.name='adam' (or weight_decay=0)")
    if isinstance(model, Mapping) and model.get("name") in MODELS \
            and _declares_tables(model) is False:
        problems.append(f"{what} needs a model that declares embedding tables "
                        f"(training.tables.Table); {model['name']!r} declares none: use "
                        "'dense'")
    return problems


def _mesh_problems(tree: Mapping[str, Any]) -> list[str]:
    """The mesh the ``mesh`` block asks for, on the visible devices, and the batch it splits."""
    data, model = _lookup(tree, "mesh.data"), _lookup(tree, "mesh.model")
    data = -1 if data is _MISSING else data
    model = 1 if model is _MISSING else model
    if not (_is_int(data) and _is_int(model)) or data < -1 or model < -1:
        return []  # Reported by COMMON.
    try:
        mesh = sharding.make_mesh(int(data), int(model))
    except ValueError as e:
        return [f"mesh.data = {data}, mesh.model = {model}: {e}"]
    batch = _lookup(tree, "training.batch_size")
    if _is_int(batch) and batch >= 1 and batch % sharding.data_size(mesh):
        return [_problem("training.batch_size", batch,
                         f"must be a multiple of the {sharding.data_size(mesh)} devices of the "
                         "mesh's data axis (each takes an equal part of every batch)")]
    return []


def _index_problems(tree: Mapping[str, Any]) -> list[str]:
    """``index.use_gpu = "always"`` for an index FAISS keeps on the CPU."""
    kind, quantizer = _lookup(tree, "index.kind"), _lookup(tree, "index.quantizer")
    reason = cpu_only(kind, "radius" if quantizer is _MISSING else quantizer)
    if _lookup(tree, "index.use_gpu") == "always" and reason:
        return [_problem("index.use_gpu", "always", f"asks for a GPU index, but {reason}")]
    return []


def config_problems(config: ml_collections.ConfigDict, task: str, *,
                    data_given: bool = False) -> list[str]:
    """Every problem of ``config`` for ``task``, one line each naming the key; ``[]`` if none.

    Args:
      config: the resolved experiment config.
      task: the task's name (``rating``, ``implicit``, ``retrieval``).
      data_given: the caller passes prepared data, so the ``data``/``split`` blocks are unused.
    """
    tree = config.to_dict()
    problems = [f"{key} is missing" for key in REQUIRED if _lookup(tree, key) is _MISSING]
    rules = {**COMMON, **({} if data_given else DATA), **TASK_KEYS.get(task, {})}
    for key, check in rules.items():
        value = _lookup(tree, key)
        if value is not _MISSING and (what := check(value)):
            problems.append(_problem(key, value, what))
    if not data_given:
        problems += _split_problems(tree)
    return (problems + _monitor_problems(tree, task) + _head_problems(tree, task)
            + _table_problems(tree, task) + _mesh_problems(tree) + _index_problems(tree))


def check_config(config: ml_collections.ConfigDict, task: str, *,
                 data_given: bool = False) -> None:
    """Raises ``ConfigError`` listing every problem of ``config`` (see ``config_problems``)."""
    problems = config_problems(config, task, data_given=data_given)
    if problems:
        raise ConfigError(
            f"the config cannot give a meaningful {task} run ({len(problems)} problem(s)); "
            "nothing was run or written:\n  " + "\n  ".join(problems)
            + "\nFix the config file or the --config.<key>=<value> override.")
