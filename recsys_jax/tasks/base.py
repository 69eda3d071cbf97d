"""The Task interface: what differs between kinds of problem, and nothing else.

A task turns a config into data, a model, a loss, a validator, test metrics and exports; the
shared engine (``recsys_jax.training``) trains and ``tasks.runner.train_and_evaluate`` runs the
steps in order. One task per kind of problem: ``rating`` (explicit ratings), ``implicit``
(positives with sampled negatives; pointwise or pairwise losses) and ``retrieval`` (towers,
in-batch softmax, FAISS serving).

Monitored metric, one schema for every task: ``config.training.monitor`` names a metric the
validator returns, ``val_<metric>`` or ``val_<metric>@<K>``; error metrics (``rmse``, ``mae``)
are minimised, every other metric maximised (``monitor_mode``).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import ml_collections
import numpy as np
from flax import nnx

from recsys_jax.data.columns import Columns
from recsys_jax.models.fitted import Fitted
from recsys_jax.models.registry import build_model
from recsys_jax.training.loop import Evaluate, FitResult
from recsys_jax.training.losses import LossFn

# Metrics where lower is better; every other monitored metric is maximised.
ERROR_METRICS = ("rmse", "mae", "loss")


def monitor_mode(monitor: str) -> str:
    """``"min"`` for error metrics (``val_rmse``), ``"max"`` for the others (``val_ndcg@10``).

    Raises:
      ValueError: for a name that is not ``val_<metric>`` or ``val_<metric>@<K>``.
    """
    if not monitor.startswith("val_") or len(monitor) <= len("val_"):
        raise ValueError(f"training.monitor must look like 'val_rmse' or 'val_ndcg@10', got "
                         f"{monitor!r}")
    metric = monitor[len("val_"):].split("@")[0]
    return "min" if metric in ERROR_METRICS else "max"


def monitor_parts(monitor: str) -> tuple[str, int]:
    """``"val_ndcg@10" -> ("ndcg", 10)`` for ranking monitors.

    Raises:
      ValueError: when the name has no ``@K`` cut-off.
    """
    monitor_mode(monitor)
    if "@" not in monitor:
        raise ValueError(f"a ranking task monitors a metric at a cut-off, e.g. 'val_ndcg@10'; "
                         f"got {monitor!r}")
    metric, k = monitor[len("val_"):].split("@")
    return metric, int(k)


@dataclasses.dataclass
class TaskData:
    """What every task's prepared data has in common (tasks subclass it).

    Attributes:
      train: the columns the gradient loop trains on (validated ids).
      num_users, num_items: sizes of the id spaces.
      dataset: the data set's name.
      split_protocol: the split's protocol.
      split_fingerprint: ``Split.fingerprint()``; runs are only compared on equal ones.
      report_section: Markdown on data set and split (with the leakage report).
      train_tables: arrays every training step reads whole, which ``train``'s columns may
        point into (``loop.fit``'s ``tables``; e.g. the retrieval task's per-event tables of
        causal user inputs); none by default.
    """

    train: Columns
    num_users: int
    num_items: int
    dataset: str
    split_protocol: str
    split_fingerprint: str
    report_section: str
    train_tables: Columns = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunResult:
    """What ``train_and_evaluate`` returns: everything in memory, nothing to read back.

    Attributes:
      config: the resolved config.
      task: the task that ran.
      data: its prepared data.
      model: the trained model (best validation epoch).
      fit: the gradient loop's result (``None`` for a ``SelfFitting`` model).
      summary: the run's JSON record (``test_metrics.json``): test metrics, training facts,
        timings (total wall, compile, per epoch) and data facts.
      sections: the Markdown sections of ``report.md``.
      workdir: where the files went (``None`` when nothing was written).
    """

    config: ml_collections.ConfigDict
    task: Task
    data: TaskData
    model: nnx.Module
    fit: FitResult | None
    summary: dict[str, Any]
    sections: list[str]
    workdir: Path | None


class Task(abc.ABC):
    """One kind of problem. Subclasses set ``name`` and ``model_protocol`` and implement the
    abstract methods; ``runner.train_and_evaluate`` calls them in this order:

    ``prepare`` → ``build_model`` → (``loss``, ``validator``, the engine's ``fit``) or the
    model's own ``fit`` → ``evaluate`` → ``export`` → ``report_sections``.
    """

    name: ClassVar[str]
    model_protocol: ClassVar[type]  # What a model must implement (models.contract).
    default_monitor: ClassVar[str]

    def monitor(self, config: ml_collections.ConfigDict) -> str:
        """The validation metric that selects the best epoch."""
        return config.training.get("monitor") or self.default_monitor

    @abc.abstractmethod
    def prepare(self, config: ml_collections.ConfigDict, workdir: Path | None) -> TaskData:
        """Loads, encodes and splits the data and builds the model inputs (from training data
        only); with a workdir also saves ``ids/`` and ``split/``."""

    def model_inputs(self, config: ml_collections.ConfigDict, data: TaskData
                     ) -> dict[str, Any]:
        """Extra keyword inputs of the registry builder (none by default)."""
        del config, data
        return {}

    def build_model(self, config: ml_collections.ConfigDict, data: TaskData) -> nnx.Module:
        """The configured model, built through the registry, seeded by ``training.seed``."""
        return build_model(config.model, num_users=data.num_users, num_items=data.num_items,
                           train=data.train, rngs=nnx.Rngs(params=config.training.seed),
                           **self.model_inputs(config, data))

    @abc.abstractmethod
    def loss(self, config: ml_collections.ConfigDict, data: TaskData) -> LossFn:
        """``loss_fn(model, batch, rng) -> (loss, aux)`` on batches of ``data.train``."""

    @abc.abstractmethod
    def validator(self, config: ml_collections.ConfigDict, data: TaskData) -> Evaluate:
        """``model -> {metric: value}`` on the validation part, including the monitor."""

    @abc.abstractmethod
    def evaluate(self, config: ml_collections.ConfigDict, data: TaskData,
                 model: nnx.Module) -> dict[str, Any]:
        """Test metrics (JSON-able, flat or one level of nesting)."""

    def export(self, config: ml_collections.ConfigDict, data: TaskData, model: nnx.Module,
               workdir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Writes the task's outputs besides the saved model (embeddings, ``run/``, indexes);
        returns facts to add to the summary. Nothing by default."""
        del config, data, model, workdir, summary
        return {}

    def report_sections(self, config: ml_collections.ConfigDict, data: TaskData,
                        model: nnx.Module, summary: Mapping[str, Any],
                        workdir: Path | None) -> list[str]:
        """Markdown sections of ``report.md`` after the common header (post-training analyses
        such as baselines run here, on the in-memory model)."""
        del config, model, summary, workdir
        return [data.report_section]

    def headline(self, summary: Mapping[str, Any]) -> str:
        """One line for the console: the main test figures."""
        return ", ".join(f"{k} {v:.4f}" for k, v in summary.items()
                         if k.startswith("test_") and isinstance(v, float))

    def fit_columns(self, data: TaskData) -> Columns:
        """The columns a ``SelfFitting`` model's ``fit`` reads: ``data.train`` by default (a
        task may add columns the gradient loop does not carry, e.g. timestamps)."""
        return data.train

    def num_parameters(self, model: nnx.Module) -> int:
        """Parameters of ``model``: trainable (``nnx.Param``) and fitted without gradients
        (``models.fitted.Fitted``)."""
        import jax
        state = nnx.state(model, nnx.Any(nnx.Param, Fitted))
        return int(sum(np.size(x) for x in jax.tree.leaves(state)))
