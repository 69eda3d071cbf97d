"""Training the PyTorch MF baseline: the plain ``DataLoader`` loop and a tuned loop.

Two variants of the same recipe (MSE, Adam with PyTorch's L2 ``weight_decay``, batch size,
early stopping on validation RMSE with the best epoch restored):

* ``baseline``: what a PyTorch user writes first: a ``DataLoader(TensorDataset(...),
  shuffle=True)``, ``nn.MSELoss``, ``torch.optim.Adam(weight_decay=...)`` with its CPU default
  implementation, ``loss.item()`` each step for the running loss.
* ``tuned``: the same updates without the per-example overhead: the training tensors are
  permuted once per epoch (``torch.randperm``) and batches are contiguous slices of them (no
  ``DataLoader``, no collation), Adam with ``fused=True`` (one kernel over all parameters),
  the running loss accumulated as a tensor (one ``.item()`` per epoch), and optionally
  ``torch.compile`` of the model (its first call compiles; timed apart by the caller).

Both decay only the tables and bias vectors, not μ, exactly as ``recsys_jax``'s ``adam``
optimizer does (a location parameter shrunk towards 0 is not regularisation).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.torch_baseline.torch_mf import TorchMF, build_torch_mf, predict
from recsys_jax.training.early_stopping import EarlyStopping

VARIANTS = ("baseline", "tuned")


@dataclasses.dataclass(frozen=True)
class MFRecipe:
    """The hyperparameters the JAX config fixes, in framework-neutral form."""

    dim: int = 64
    init_std: float = 0.01
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 50
    patience: int = 5
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> MFRecipe:
        """The recipe of an MF experiment config (``configs/mf_ml100k.py`` fields).

        Raises:
          ValueError: for settings the baseline does not implement (it covers the seed
            recipe: Adam, constant rate, MSE, no per-row L2, zero fallback for unseen ids).
        """
        m, o, t = config.model, config.optimizer, config.training
        unsupported = {
            "optimizer.name": (o.name, "adam"), "optimizer.schedule": (o.schedule, "constant"),
            "optimizer.tables": (o.get("tables", "dense"), "dense"),
            "training.loss": (t.loss, "mse"), "training.l2_reg": (t.l2_reg, 0.0),
            "model.unseen_user": (m.get("unseen_user", "zero"), "zero"),
            "model.unseen_item": (m.get("unseen_item", "zero"), "zero")}
        bad = {k: v for k, (v, ok) in unsupported.items() if v != ok}
        if bad:
            raise ValueError(f"the PyTorch baseline implements the seed recipe only; "
                             f"unsupported settings: {bad}")
        fields = dict(dim=int(m.dim), init_std=float(m.init_std), lr=float(o.lr),
                      weight_decay=float(o.weight_decay), batch_size=int(t.batch_size),
                      max_epochs=int(t.epochs), patience=int(t.patience), seed=int(t.seed))
        fields.update(overrides)
        return cls(**fields)


def make_adam(model: nn.Module, recipe: MFRecipe, *, fused: bool | None = None
              ) -> torch.optim.Adam:
    """Adam with L2 ``weight_decay`` on every tensor parameter and none on scalars (μ)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 0], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim == 0], "weight_decay": 0.0}]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=recipe.lr, fused=fused)


def _tensors(columns: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return (torch.as_tensor(np.asarray(columns["user"], np.int64)),
            torch.as_tensor(np.asarray(columns["item"], np.int64)),
            torch.as_tensor(np.asarray(columns["rating"], np.float32)))


class BaselineTrainer:
    """One epoch = one pass of a shuffling ``DataLoader`` (the textbook PyTorch loop)."""

    def __init__(self, model: TorchMF, train: Mapping[str, np.ndarray], recipe: MFRecipe):
        self.model = model
        self.optimizer = make_adam(model, recipe)
        self.criterion = nn.MSELoss()
        generator = torch.Generator().manual_seed(recipe.seed)
        self.loader = DataLoader(TensorDataset(*_tensors(train)), batch_size=recipe.batch_size,
                                 shuffle=True, generator=generator)

    def train_epoch(self, epoch: int) -> float:
        """Trains one epoch; returns the mean training loss over its examples."""
        del epoch  # The DataLoader's generator carries the shuffle from epoch to epoch.
        self.model.train()
        total, count = 0.0, 0
        for users, items, ratings in self.loader:
            self.optimizer.zero_grad()
            loss = self.criterion(self.model(users, items), ratings)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(ratings)
            count += len(ratings)
        return total / max(count, 1)


class TunedTrainer:
    """One epoch = contiguous slices of the training tensors permuted once per epoch."""

    def __init__(self, model: TorchMF, train: Mapping[str, np.ndarray], recipe: MFRecipe, *,
                 compile_model: bool = False):
        self.model = model
        self.optimizer = make_adam(model, recipe, fused=True)
        self.forward: Callable[..., torch.Tensor] = (
            torch.compile(model) if compile_model else model)
        self.users, self.items, self.ratings = _tensors(train)
        self.batch_size = recipe.batch_size
        self.seed = recipe.seed

    def train_epoch(self, epoch: int) -> float:
        """Trains one epoch; returns the mean training loss over its examples."""
        self.model.train()
        n = len(self.ratings)
        # The epoch's order is a function of (seed, epoch), so a run is reproducible.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + epoch))
        users, items, ratings = self.users[order], self.items[order], self.ratings[order]
        total = torch.zeros(())
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            r = ratings[start:stop]
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(self.forward(users[start:stop], items[start:stop]), r)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(r)
        return float(total) / max(n, 1)


@dataclasses.dataclass
class FitRecord:
    """What one training run did and how long each part took (seconds, wall clock).

    Attributes:
      variant: ``baseline``, ``tuned`` (PyTorch) or ``jax``.
      setup_s: model, optimizer and data set-up before the first epoch.
      compile_s: explicit ahead-of-time compilation (JAX); 0 where compilation happens in the
        first epoch (``torch.compile``), which then shows as warm-up.
      history: per epoch ``epoch``, ``train_loss``, ``val_rmse``, ``epoch_time_s``,
        ``eval_time_s``.
      best_epoch, best_val_rmse: the restored epoch.
      time_to_best_s: from the start of set-up to the end of the best epoch's validation.
      total_s: from the start of set-up to the end of training.
      test_predictions: raw predictions of the restored model for the test rows.
    """

    variant: str
    setup_s: float
    compile_s: float
    history: list[dict[str, float]]
    best_epoch: int
    best_val_rmse: float
    time_to_best_s: float
    total_s: float
    test_predictions: np.ndarray


def clipped_rmse(predictions: np.ndarray, ratings: np.ndarray,
                 rating_scale: tuple[float, float]) -> float:
    """RMSE of predictions clipped to the scale (the evaluation suite's definition)."""
    from recsys_jax.evaluation.rating_metrics import clip_predictions  # NumPy only, no JAX.
    err = clip_predictions(predictions, rating_scale) - np.asarray(ratings, np.float64)
    return float(np.sqrt(np.mean(err ** 2)))


def fit_torch_mf(variant: str, recipe: MFRecipe, data: Mapping[str, Any], *,
                 compile_model: bool = False, start: float | None = None) -> FitRecord:
    """Trains the PyTorch MF with early stopping on validation RMSE; restores the best epoch.

    Args:
      variant: ``"baseline"`` or ``"tuned"``.
      recipe: hyperparameters.
      data: ``train``, ``val``, ``test`` column dicts, ``num_users``, ``num_items``,
        ``rating_scale``.
      compile_model: ``torch.compile`` the model (tuned variant only).
      start: ``time.perf_counter()`` the set-up time is measured from (default: now).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    start = time.perf_counter() if start is None else start
    train, val, test = data["train"], data["val"], data["test"]
    model = build_torch_mf(data["num_users"], data["num_items"], recipe.dim, train["rating"],
                           train["user"], train["item"], init_std=recipe.init_std,
                           seed=recipe.seed)
    trainer = (BaselineTrainer(model, train, recipe) if variant == "baseline"
               else TunedTrainer(model, train, recipe, compile_model=compile_model))
    setup_s = time.perf_counter() - start
    history, early = [], EarlyStopping(recipe.patience)
    best_state, time_to_best = None, float("nan")
    for epoch in range(1, recipe.max_epochs + 1):
        t0 = time.perf_counter()
        train_loss = trainer.train_epoch(epoch)
        t1 = time.perf_counter()
        val_rmse = clipped_rmse(predict(model, val["user"], val["item"]), val["rating"],
                                data["rating_scale"])
        t2 = time.perf_counter()
        history.append({"epoch": epoch, "train_loss": train_loss, "val_rmse": val_rmse,
                        "epoch_time_s": t1 - t0, "eval_time_s": t2 - t1})
        if early.update(val_rmse, epoch):
            best_state = copy.deepcopy(model.state_dict())
            time_to_best = time.perf_counter() - start
        elif early.should_stop:
            break
    total_s = time.perf_counter() - start
    model.load_state_dict(best_state)
    return FitRecord(variant=variant, setup_s=setup_s, compile_s=0.0, history=history,
                     best_epoch=early.best_epoch, best_val_rmse=early.best_value,
                     time_to_best_s=time_to_best,
                     total_s=total_s,
                     test_predictions=predict(model, test["user"], test["item"]))
