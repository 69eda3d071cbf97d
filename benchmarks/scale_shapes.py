"""The scale benchmark's workloads and data shapes, without command-line flags.

``benchmarks.scale`` runs them with the library's own task code; ``benchmarks.torch_vs_jax
--shape`` runs the JAX side against the PyTorch baseline on the same configs. A *workload*
(``WORKLOADS``) is a config users run plus overrides; a *shape* (``SHAPES``) sets the synthetic
generator's size and the split through the same config (``data.dataset=synthetic``) and, where
stated, the batch size. ``workload_overrides`` is the one place that combines them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Workload:
    """One training recipe: a config users run, plus overrides.

    Attributes:
      config: the config file, relative to the repository root.
      overrides: dotted config fields set on top (``apply_overrides``).
      family: which batch size a shape sets (``"mf"``, ``"dot_mf"``, ``"two_tower"``).
      max_epoch_steps: the default cap on steps per epoch (None: full epochs).
      table_sweep: whether the ``table_sweep`` shape times this workload's MF step.
    """

    config: str
    overrides: Mapping[str, Any]
    family: str
    max_epoch_steps: int | None = None
    table_sweep: bool = False


# Dense recipes update every row of the tables every step: at ML-20M's size a full epoch is
# tens of thousands of such steps, so by default they time this many steps per epoch.
DENSE_MAX_EPOCH_STEPS = 2000
_MF = "configs/mf_ml100k.py"
_NCF = "configs/ncf_ml100k.py"
_DOT_MF = {"model.name": "dot_mf", "model.dim": 64}
WORKLOADS: dict[str, Workload] = {
    "mf": Workload(_MF, {}, "mf", DENSE_MAX_EPOCH_STEPS, table_sweep=True),
    "mf_lazy_adam": Workload(_MF, {"optimizer.tables": "lazy_adam"}, "mf", table_sweep=True),
    "mf_rowwise_adagrad": Workload(_MF, {"optimizer.tables": "rowwise_adagrad"}, "mf",
                                   table_sweep=True),
    "dot_mf": Workload(_NCF, _DOT_MF, "dot_mf", DENSE_MAX_EPOCH_STEPS),
    "dot_mf_lazy_adam": Workload(_NCF, {**_DOT_MF, "optimizer.tables": "lazy_adam"}, "dot_mf"),
    "dot_mf_rowwise_adagrad": Workload(_NCF, {**_DOT_MF, "optimizer.tables": "rowwise_adagrad"},
                                       "dot_mf"),
    "two_tower": Workload("configs/two_tower_ml100k.py", {"features.titles": False},
                          "two_tower"),
    # History pooled from a learnt per-item table, updated row-sparsely: no step work grows with
    # the catalogue (docs/models/two_tower.md, "History from a learnt table").
    "two_tower_id_history": Workload(
        "configs/two_tower_ml100k.py", {"features.titles": False,
                                        "model.history_source": "id_embedding",
                                        "optimizer.tables": "lazy_adam"}, "two_tower"),
}


@dataclasses.dataclass(frozen=True)
class Shape:
    """A data size of the synthetic generator (``recsys_jax.data.synthetic``) and its split.

    Attributes:
      num_users, num_items, num_interactions: the generator's sizes.
      split: the split protocol (fractions: the configs' 0.1 validation, 0.1 test).
      batch_size: per workload family, the batch size (else the config's).
    """

    num_users: int
    num_items: int
    num_interactions: int
    split: str = "user_temporal"
    batch_size: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def overrides(self) -> dict[str, Any]:
        """The config fields this shape sets."""
        return {"data.dataset": "synthetic", "data.num_users": self.num_users,
                "data.num_items": self.num_items,
                "data.num_interactions": self.num_interactions, "split.name": self.split}


TABLE_SWEEP = "table_sweep"
SHAPES: dict[str, Shape] = {
    # For tests and smoke checks: seconds per cell.
    "tiny": Shape(200, 300, 5_000),
    # One twentieth of ML-20M's users and ratings, its catalogue: a medium check.
    "ml20m_20th": Shape(6_925, 26_744, 1_000_013),
    "ml20m": Shape(138_493, 26_744, 20_000_263),
    "1m_items": Shape(200_000, 1_000_000, 10_000_000,
                      batch_size={"mf": 1024, "dot_mf": 1024, "two_tower": 2048}),
}
# Every epoch asked for runs (no early stop); the caller sets training.epochs.
BENCHMARK_OVERRIDES = {"training.patience": 0}


def workload_overrides(shape_name: str, workload_name: str, *, epochs: int) -> dict[str, Any]:
    """The config overrides of ``workload_name`` on ``shape_name``: the workload's, the
    shape's (data size, split, the family's batch size), no early stopping and ``epochs``.

    Raises:
      KeyError: for an unknown shape or workload.
    """
    shape, workload = SHAPES[shape_name], WORKLOADS[workload_name]
    overrides = {**workload.overrides, **shape.overrides(), **BENCHMARK_OVERRIDES,
                 "training.epochs": epochs}
    if workload.family in shape.batch_size:
        overrides["training.batch_size"] = shape.batch_size[workload.family]
    return overrides


def workload_config(shape_name: str, workload_name: str, *, epochs: int) -> Any:
    """The config (``ml_collections.ConfigDict``) of ``workload_name`` on ``shape_name``:
    its config file with ``workload_overrides`` applied."""
    from benchmarks.harness import REPO_ROOT
    from recsys_jax.config_files import load_config_file
    from recsys_jax.tasks.rating_search import apply_overrides
    return apply_overrides(load_config_file(REPO_ROOT / WORKLOADS[workload_name].config),
                           workload_overrides(shape_name, workload_name, epochs=epochs))
