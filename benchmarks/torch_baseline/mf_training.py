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

On a GPU (``device="cuda"``) the model lives on the device; the ``baseline`` loop keeps its
``DataLoader`` on the host and moves each batch (``.to(device)``, as the textbook loop does), the
other two put the training tensors on the device once; the epoch orders are drawn on the host
as on the CPU, so every device trains on the same batches.

Both decay only the tables and bias vectors, not μ, exactly as ``recsys_jax``'s ``adam``
optimizer does (a location parameter shrunk towards 0 is not regularisation).

A third variant is the counterpart of the JAX row-sparse recipe (``optimizer.tables=
lazy_adam``, ``MFRecipe.tables``), which the dense two do not implement:

* ``sparse``: the tuned loop on ``nn.Embedding(sparse=True)`` tables (embeddings and biases)
  with ``torch.optim.SparseAdam``, PyTorch's idiomatic lazy Adam, and a fused ``Adam`` for μ.
  ``SparseAdam`` has no weight decay, so the recipe's L2 enters the loss as
  ``wd/2 · Σ ‖θ_r‖²`` over the *distinct* rows the batch reads (user rows with their bias, item
  rows with theirs): its gradient adds ``wd·θ_r`` once to each row read, however often the
  batch reads it, and nothing to the other rows, which is lazy Adam's rule
  (``recsys_jax.training.row_sparse``: "L2 once per touched row per step"). No
  ``torch.compile``: the variant runs eager.
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

VARIANTS = ("baseline", "tuned", "sparse")
# The config's ``optimizer.tables`` each variant implements.
VARIANT_TABLES = {"baseline": "dense", "tuned": "dense", "sparse": "lazy_adam"}


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
    tables: str = "dense"

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> MFRecipe:
        """The recipe of an MF experiment config (``configs/mf_ml100k.py`` fields).

        Raises:
          ValueError: for settings the baseline does not implement (it covers the seed
            recipe: Adam with dense or lazy-Adam tables, constant rate, MSE, no per-row L2,
            zero fallback for unseen ids).
        """
        m, o, t = config.model, config.optimizer, config.training
        unsupported = {
            "optimizer.name": (o.name, "adam"), "optimizer.schedule": (o.schedule, "constant"),
            "training.loss": (t.loss, "mse"), "training.l2_reg": (t.l2_reg, 0.0),
            "model.unseen_user": (m.get("unseen_user", "zero"), "zero"),
            "model.unseen_item": (m.get("unseen_item", "zero"), "zero")}
        bad = {k: v for k, (v, ok) in unsupported.items() if v != ok}
        tables = o.get("tables", "dense")
        if tables not in set(VARIANT_TABLES.values()):
            bad["optimizer.tables"] = tables
        if bad:
            raise ValueError(f"the PyTorch baseline implements the seed recipe only; "
                             f"unsupported settings: {bad}")
        fields = dict(dim=int(m.dim), init_std=float(m.init_std), lr=float(o.lr),
                      weight_decay=float(o.weight_decay), batch_size=int(t.batch_size),
                      max_epochs=int(t.epochs), patience=int(t.patience), seed=int(t.seed),
                      tables=str(tables))
        fields.update(overrides)
        return cls(**fields)


def variants_for_tables(tables: str) -> list[str]:
    """The PyTorch variants that implement ``optimizer.tables`` = ``tables``."""
    return [v for v in VARIANTS if VARIANT_TABLES[v] == tables]


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
        self.device = model.global_mean.device
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
        for batch in self.loader:
            users, items, ratings = (t.to(self.device) for t in batch)
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
        self.optimizer = self.make_optimizer(model, recipe)
        self.forward: Callable[..., torch.Tensor] = (
            torch.compile(model) if compile_model else model)
        self.device = model.global_mean.device
        self.users, self.items, self.ratings = (t.to(self.device) for t in _tensors(train))
        self.batch_size = recipe.batch_size
        self.seed = recipe.seed

    def make_optimizer(self, model: TorchMF, recipe: MFRecipe) -> torch.optim.Optimizer:
        """The optimizer of every parameter: fused Adam with L2 on the tables."""
        return make_adam(model, recipe, fused=True)

    def train_epoch(self, epoch: int) -> float:
        """Trains one epoch; returns the mean training loss over its examples."""
        self.model.train()
        n = len(self.ratings)
        # The epoch's order is a function of (seed, epoch), so a run is reproducible.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + epoch)).to(self.device)
        users, items, ratings = self.users[order], self.items[order], self.ratings[order]
        total = torch.zeros((), device=self.device)
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            r = ratings[start:stop]
            total += self.step(users[start:stop], items[start:stop], r) * len(r)
        return float(total) / max(n, 1)

    def step(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
             ) -> torch.Tensor:
        """One update on a batch; returns its (detached) mean squared error."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.forward(users, items), ratings)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class SparseTrainer(TunedTrainer):
    """The tuned loop on sparse tables: ``SparseAdam`` for the embedding and bias tables, fused
    ``Adam`` for μ, the L2 of the distinct rows read in the loss (see the module docstring)."""

    def __init__(self, model: TorchMF, train: Mapping[str, np.ndarray], recipe: MFRecipe):
        if not model.user_embedding.sparse:
            raise ValueError("the sparse variant needs a TorchMF built with sparse=True")
        super().__init__(model, train, recipe)
        self.dense_optimizer = torch.optim.Adam([model.global_mean], lr=recipe.lr, fused=True)
        self.weight_decay = recipe.weight_decay

    def make_optimizer(self, model: TorchMF, recipe: MFRecipe) -> torch.optim.Optimizer:
        """``SparseAdam`` (Adam's default β and ε) on the embedding and bias tables."""
        return torch.optim.SparseAdam([model.user_embedding.weight, model.item_embedding.weight,
                                       model.user_bias.weight, model.item_bias.weight],
                                      lr=recipe.lr)

    def step(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor
             ) -> torch.Tensor:
        """One update on a batch; returns its (detached) mean squared error (without L2)."""
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        self.dense_optimizer.zero_grad(set_to_none=True)
        mse = F.mse_loss(model(users, items), ratings)
        loss = mse
        if self.weight_decay:
            read_users, read_items = torch.unique(users), torch.unique(items)
            squares = (model.user_embedding(read_users).square().sum()
                       + model.user_bias(read_users).square().sum()
                       + model.item_embedding(read_items).square().sum()
                       + model.item_bias(read_items).square().sum())
            loss = mse + 0.5 * self.weight_decay * squares
        loss.backward()
        self.optimizer.step()
        self.dense_optimizer.step()
        return mse.detach()


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
                 compile_model: bool = False, start: float | None = None,
                 device: str = "cpu") -> FitRecord:
    """Trains the PyTorch MF with early stopping on validation RMSE; restores the best epoch.

    Args:
      variant: ``"baseline"``, ``"tuned"`` (``recipe.tables`` dense) or ``"sparse"``
        (``recipe.tables`` lazy_adam).
      recipe: hyperparameters.
      data: ``train``, ``val``, ``test`` column dicts, ``num_users``, ``num_items``,
        ``rating_scale``.
      compile_model: ``torch.compile`` the model (tuned variant only).
      start: ``time.perf_counter()`` the set-up time is measured from (default: now).
      device: the torch device to train on (``"cpu"``, ``"cuda"``); the initialisation is
        drawn on the CPU either way, so it is the same.

    Raises:
      ValueError: for an unknown variant, or one that does not implement ``recipe.tables``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if VARIANT_TABLES[variant] != recipe.tables:
        raise ValueError(f"variant {variant!r} trains {VARIANT_TABLES[variant]} tables but the "
                         f"recipe has tables={recipe.tables!r}; variants for it: "
                         f"{variants_for_tables(recipe.tables)}")
    start = time.perf_counter() if start is None else start
    train, val, test = data["train"], data["val"], data["test"]
    model = build_torch_mf(data["num_users"], data["num_items"], recipe.dim, train["rating"],
                           train["user"], train["item"], init_std=recipe.init_std,
                           seed=recipe.seed, sparse=variant == "sparse").to(device)
    if variant == "baseline":
        trainer = BaselineTrainer(model, train, recipe)
    elif variant == "tuned":
        trainer = TunedTrainer(model, train, recipe, compile_model=compile_model)
    else:
        trainer = SparseTrainer(model, train, recipe)
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
