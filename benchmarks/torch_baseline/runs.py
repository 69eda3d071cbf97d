"""Which side-by-side runs ``benchmarks.torch_vs_jax`` makes: a model on a config, or a scale
workload on a shape (``benchmarks.scale_shapes``), and the variants of each.

Kept apart from the script, which defines command-line flags, so tests can import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from benchmarks import scale_shapes
from benchmarks.torch_baseline import mf_benchmark, two_tower_benchmark

MODELS = ("mf", "two_tower")
# With --shape: the scale workloads that have a PyTorch side, and the model each trains.
SHAPE_WORKLOADS = {"mf": "mf", "mf_lazy_adam": "mf", "two_tower": "two_tower"}
SHAPE_EPOCHS = 2


@dataclasses.dataclass(frozen=True)
class Run:
    """One model's side-by-side benchmark.

    Attributes:
      name: the output files' stem after ``benchmark_`` (the model, or ``<shape>_<workload>``).
      model: ``"mf"`` or ``"two_tower"``.
      config: its experiment config.
      epochs: ``--epochs`` (None: the config's).
      max_epoch_steps: the cap on steps per epoch (None: full epochs).
      shape, workload: with ``--shape``, the scale benchmark's shape and workload.
    """

    name: str
    model: str
    config: Any
    epochs: int | None
    max_epoch_steps: int | None
    shape: str | None = None
    workload: str | None = None


def plan_runs(models: Sequence[str], *, config: Any, shape: str | None, epochs: int | None,
              max_epoch_steps: int | None) -> list[Run]:
    """The runs of ``--models``: on ``config`` without a shape, else each scale workload on
    ``shape`` (``scale_shapes.workload_config``, ``SHAPE_EPOCHS`` epochs unless ``epochs``,
    the workload's default cap unless ``max_epoch_steps``; 0 means full epochs).

    Raises:
      ValueError: for an unknown model or workload, or fewer than 2 epochs at a shape.
    """
    models = list(dict.fromkeys(models))
    known = MODELS if shape is None else tuple(SHAPE_WORKLOADS)
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown models {unknown}; available"
                         f"{'' if shape is None else ' with --shape'}: {', '.join(known)}")
    if shape is None:
        return [Run(m, m, config, epochs, max_epoch_steps or None) for m in models]
    epochs = epochs or SHAPE_EPOCHS
    if epochs < 2:
        raise ValueError("--epochs must be at least 2 with --shape (epoch 1 warms up, the "
                         "steady epoch is the median of the others)")
    runs = []
    for workload in models:
        cap = (scale_shapes.WORKLOADS[workload].max_epoch_steps if max_epoch_steps is None
               else max_epoch_steps)
        runs.append(Run(f"{shape}_{workload}", SHAPE_WORKLOADS[workload],
                        scale_shapes.workload_config(shape, workload, epochs=epochs), epochs,
                        cap or None, shape, workload))
    return runs


def run_variants(run: Run, requested: Sequence[str] | None) -> list[str]:
    """The variants of ``run`` to train: all of the model's (MF: those of its
    ``optimizer.tables``), or those of ``requested`` that it has.

    Raises:
      ValueError: when that leaves no PyTorch variant or no ``jax``.
    """
    available = (mf_benchmark.mf_variants(run.config) if run.model == "mf"
                 else two_tower_benchmark.VARIANTS)
    if requested is None:
        return list(available)
    kept = [v for v in available if v in requested]
    if "jax" not in kept or len(kept) < 2:
        raise ValueError(f"{run.name}: --variants={','.join(requested)} leaves {kept}; it needs "
                         f"jax and one of {[v for v in available if v != 'jax']}")
    return kept
