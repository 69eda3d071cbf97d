"""Training the PyTorch two-tower baseline: the plain ``DataLoader`` loop and a tuned loop.

Two variants of the JAX config's recipe (in-batch softmax with the same logQ / accidental-hit
options, the same optimizer and weight decay, batch size, a fixed number of epochs):

* ``baseline``: what a PyTorch user writes first: a shuffling ``DataLoader`` over a
  ``TensorDataset`` of (user, item) positives, ``torch.optim.Adam``/``AdamW`` with its CPU
  default implementation, ``loss.item()`` each step for the running loss.
* ``tuned``: the same updates without the per-batch overhead: the positives are permuted once
  per epoch (``torch.randperm``) and batches are contiguous slices (no ``DataLoader``, no
  collation), the optimizer with ``fused=True``, the running loss accumulated as a tensor, and
  optionally ``torch.compile`` of the loss computation (off by default: it compiles for tens of
  seconds on CPU, longer than a whole ML-100K run; the first epoch pays it and shows as warm-up).

Training runs for a fixed number of epochs, without per-epoch validation, in both frameworks:
the benchmark compares the speed of the same amount of work, then scores the final embeddings.
With ``epoch_embeddings`` each epoch's item embeddings and user embeddings are also exported,
outside the epoch's timing, twice: with the training-time user inputs (what validation scores)
and with the test users' inputs. The benchmark then scores every epoch on the validation part
with the evaluation suite (time to the best validation epoch) and tests the best epoch, as the
JAX run, which early-stopping keeps at its best epoch, is tested.
The model starts from the JAX model's initial parameters (``TorchTwoTower.load_jax_params``),
so the frameworks differ only in shuffling order and floating-point detail.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.torch_baseline.torch_two_tower import TorchTwoTower, in_batch_softmax_loss

VARIANTS = ("baseline", "tuned")


@dataclasses.dataclass(frozen=True)
class TwoTowerRecipe:
    """The hyperparameters the JAX two-tower config fixes, in framework-neutral form."""

    hidden_dim: int = 256
    dim: int = 128
    temperature: float = 0.07
    history: bool = True
    history_positions: bool = False
    causal_inputs: bool = True
    user_id_dim: int = 0
    item_id_dim: int = 0
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    logq: bool = True
    remove_accidental_hits: bool = True
    batch_size: int = 2048
    epochs: int = 10
    seed: int = 0

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> TwoTowerRecipe:
        """The recipe of a two-tower experiment config (``configs/two_tower_ml100k.py``).

        Raises:
          ValueError: for settings the baseline does not implement (random negatives,
            learning-rate schedules, optimizers other than Adam/AdamW).
        """
        m, o, l, t = config.model, config.optimizer, config.loss, config.training  # noqa: E741
        bad = {}
        if o.name not in ("adam", "adamw"):
            bad["optimizer.name"] = o.name
        if o.get("schedule", "constant") != "constant":
            bad["optimizer.schedule"] = o.schedule
        if l.num_random_negatives:
            bad["loss.num_random_negatives"] = l.num_random_negatives
        if bad:
            raise ValueError(f"the PyTorch two-tower baseline implements the default recipe "
                             f"only; unsupported settings: {bad}")
        fields = dict(hidden_dim=int(m.hidden_dim), dim=int(m.dim),
                      temperature=float(m.temperature), history=bool(m.history),
                      history_positions=bool(m.get("history_positions", False)),
                      causal_inputs=config.features.get("train_user_inputs",
                                                        "all_train") == "causal",
                      user_id_dim=int(m.user_id_dim), item_id_dim=int(m.item_id_dim),
                      optimizer=str(o.name), lr=float(o.lr),
                      weight_decay=float(o.get("weight_decay", 0.0)), logq=bool(l.logq),
                      remove_accidental_hits=bool(l.remove_accidental_hits),
                      batch_size=int(t.batch_size), epochs=int(t.epochs), seed=int(t.seed))
        fields.update(overrides)
        return cls(**fields)


def make_optimizer(model: nn.Module, recipe: TwoTowerRecipe, *, fused: bool | None = None
                   ) -> torch.optim.Optimizer:
    """``AdamW`` (decoupled decay, optax ``adamw``) or ``Adam`` (L2 decay, optax
    ``add_decayed_weights`` + ``adam``) as the config names; no decay on scalars (log τ),
    as recsys_jax's decay mask."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 0], "weight_decay": recipe.weight_decay},
              {"params": [p for p in params if p.ndim == 0], "weight_decay": 0.0}]
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls([g for g in groups if g["params"]], lr=recipe.lr, fused=fused)


def build_torch_two_tower(arrays: Mapping[str, np.ndarray], recipe: TwoTowerRecipe,
                          init_params: Mapping[str, np.ndarray] | None = None
                          ) -> TorchTwoTower:
    """The model over the training features; starts from ``init_params`` (JAX names) if given.

    Args:
      arrays: ``user_features``, ``item_features``, ``history_ids``, ``history_mask``.
      recipe: tower sizes, temperature, history and id-embedding settings.
      init_params: flat JAX parameters (``"user_tower/hidden/kernel"`` → array).
    """
    torch.manual_seed(recipe.seed)
    history = recipe.history and arrays["history_ids"].shape[1] > 0
    model = TorchTwoTower(
        arrays["user_features"], arrays["item_features"], hidden_dim=recipe.hidden_dim,
        dim=recipe.dim, temperature=recipe.temperature,
        history_ids=arrays["history_ids"] if history else None,
        history_mask=arrays["history_mask"] if history else None,
        user_id_dim=recipe.user_id_dim, item_id_dim=recipe.item_id_dim,
        history_positions=recipe.history_positions)
    if init_params is not None:
        model.load_jax_params(init_params)
    return model


CAUSAL_COLUMNS = ("user_features", "history_ids", "history_mask")


def positive_tensors(positives: Mapping[str, np.ndarray]) -> list[torch.Tensor]:
    """The training pairs as tensors: ``user``, ``item`` and, when present, each pair's causal
    user inputs (``CAUSAL_COLUMNS``, as ``tasks.retrieval.prepare_retrieval_data``
    builds them; history columns only with the history tower)."""
    columns = [torch.as_tensor(np.asarray(positives["user"], np.int64)),
               torch.as_tensor(np.asarray(positives["item"], np.int64))]
    dtypes = {"user_features": np.float32, "history_ids": np.int64, "history_mask": np.float32}
    for name in CAUSAL_COLUMNS:
        if name in positives:
            columns.append(torch.as_tensor(np.asarray(positives[name], dtypes[name])))
    return columns


class _Loss(nn.Module):
    """The batch loss as a module, so the tuned variant can ``torch.compile`` it whole."""

    def __init__(self, model: TorchTwoTower, log_q: torch.Tensor | None,
                 remove_accidental_hits: bool):
        super().__init__()
        self.model = model
        self.log_q = log_q
        self.remove_accidental_hits = remove_accidental_hits

    def forward(self, users: torch.Tensor, items: torch.Tensor,
                *user_inputs: torch.Tensor) -> torch.Tensor:
        """``user_inputs``: each pair's own (causal) user features, history ids and mask; none
        to use the stored per-user rows."""
        model = self.model
        if model.use_history:
            # As the JAX loss: one item-tower pass over the catalogue serves the history
            # pooling and the batch's items.
            table = model.item_embeddings(torch.arange(model.num_items, device=model.device))
            item_vectors = table[items]
        else:
            table, item_vectors = None, model.item_embeddings(items)
        user_vectors = (model.encode_users(user_inputs[0], users, *user_inputs[1:],
                                           item_table=table)
                        if user_inputs else model.user_embeddings(users, table))
        return in_batch_softmax_loss(
            user_vectors, item_vectors, items,
            self.model.temperature,
            candidate_log_q=None if self.log_q is None else self.log_q[items],
            remove_accidental_hits=self.remove_accidental_hits)


class BaselineTrainer:
    """One epoch = one pass of a shuffling ``DataLoader`` (the textbook PyTorch loop)."""

    def __init__(self, model: TorchTwoTower, positives: Mapping[str, np.ndarray],
                 log_q: np.ndarray | None, recipe: TwoTowerRecipe):
        self.model = model
        self.optimizer = make_optimizer(model, recipe)
        self.loss = _Loss(model, None if log_q is None else torch.as_tensor(log_q).to(
            model.device), recipe.remove_accidental_hits)
        dataset = TensorDataset(*positive_tensors(positives))
        self.loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(recipe.seed))

    def train_epoch(self, epoch: int) -> float:
        """Trains one epoch; returns the mean training loss over its examples."""
        del epoch  # The DataLoader's generator carries the shuffle from epoch to epoch.
        self.model.train()
        total, count = 0.0, 0
        for batch in self.loader:
            users, items, *user_inputs = (t.to(self.model.device) for t in batch)
            self.optimizer.zero_grad()
            loss = self.loss(users, items, *user_inputs)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(items)
            count += len(items)
        return total / max(count, 1)


class TunedTrainer:
    """One epoch = contiguous slices of the positives permuted once per epoch."""

    def __init__(self, model: TorchTwoTower, positives: Mapping[str, np.ndarray],
                 log_q: np.ndarray | None, recipe: TwoTowerRecipe, *,
                 compile_model: bool = False):
        self.model = model
        self.optimizer = make_optimizer(model, recipe, fused=True)
        loss = _Loss(model, None if log_q is None else torch.as_tensor(log_q).to(model.device),
                     recipe.remove_accidental_hits)
        # dynamic=True: the last, shorter batch reuses the graph instead of recompiling.
        self.loss: Callable[..., torch.Tensor] = (
            torch.compile(loss, dynamic=True) if compile_model else loss)
        self.columns = [c.to(model.device) for c in positive_tensors(positives)]
        self.batch_size, self.seed = recipe.batch_size, recipe.seed

    def train_epoch(self, epoch: int) -> float:
        """Trains one epoch; returns the mean training loss over its examples."""
        self.model.train()
        n = len(self.columns[0])
        # The epoch's order is a function of (seed, epoch), so a run is reproducible.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            self.seed * 1_000_003 + epoch)).to(self.model.device)
        columns = [c[order] for c in self.columns]
        total = torch.zeros((), device=self.model.device)
        for start in range(0, n, self.batch_size):
            batch = [c[start:start + self.batch_size] for c in columns]
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(*batch)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(batch[0])
        return float(total) / max(n, 1)


@dataclasses.dataclass
class TwoTowerFitRecord:
    """What one two-tower training run did and how long each part took (seconds, wall clock).

    Attributes:
      variant: ``baseline``, ``tuned`` (PyTorch) or ``jax``.
      setup_s: model, optimizer and data set-up before the first epoch.
      compile_s: explicit ahead-of-time compilation (JAX, ``FitResult.compile_time_s``); 0 where
      compilation happens in the
        first epoch (``torch.compile``), which then shows as warm-up.
      history: per epoch ``epoch``, ``train_loss``, ``epoch_time_s`` (JAX: ``loop.fit``'s
        records, with ``eval_time_s`` and the validation metric).
      total_s: from the start of set-up to the end of training (per-epoch exports
        excluded).
      export_s: exporting the embeddings (test-time user inputs).
      temperature: the final τ.
      user_embeddings, item_embeddings: float32 exported embeddings after the last epoch
        (rows = encoded ids; users from the test users' inputs).
      epoch_user_embeddings, epoch_item_embeddings: with ``epoch_embeddings``, every epoch's
        float32 embeddings ``[epochs, num_users | num_items, dim]`` from the training-time
        user inputs (what per-epoch validation scores); else None.
      epoch_test_user_embeddings: likewise, the user embeddings from the test users' inputs
        (what the best epoch is tested with); else None.
      epoch_export_s: the time those per-epoch exports took (in no epoch time, nor in
        ``total_s``).
      best_epoch, best_val, time_to_best_s: set by the JAX side, whose ``loop.fit``
        validates inside its epoch loop (and exports the best epoch's weights); None for
        PyTorch, whose epochs the benchmark scores afterwards (``add_time_to_best``).
    """

    variant: str
    setup_s: float
    compile_s: float
    history: list[dict[str, float]]
    total_s: float
    export_s: float
    temperature: float
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    epoch_user_embeddings: np.ndarray | None = None
    epoch_item_embeddings: np.ndarray | None = None
    epoch_test_user_embeddings: np.ndarray | None = None
    epoch_export_s: float = 0.0
    best_epoch: int | None = None
    best_val: float | None = None
    time_to_best_s: float | None = None


# The record's arrays: the worker saves them as .npy files, never in its JSON result.
ARRAY_FIELDS = ("user_embeddings", "item_embeddings", "epoch_user_embeddings",
                "epoch_item_embeddings", "epoch_test_user_embeddings")
EPOCH_EXPORTS = ("user_embeddings", "item_embeddings", "test_user_embeddings")


class EpochExports:
    """Every epoch's exported embeddings, written into ``[epochs, n, dim]`` float32 arrays
    allocated at the first export (no list of copies to stack at the end)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.arrays: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def add(self, epoch: int, export: Callable[[], Mapping[str, np.ndarray]]) -> None:
        """Stores ``export()`` (the ``EPOCH_EXPORTS`` arrays) as epoch ``epoch`` (1-based) and
        adds its wall time to ``seconds``."""
        t0 = time.perf_counter()
        exported = export()
        for name in EPOCH_EXPORTS:
            if name not in self.arrays:
                self.arrays[name] = np.empty((self.epochs, *exported[name].shape), np.float32)
            self.arrays[name][epoch - 1] = exported[name]
        self.seconds += time.perf_counter() - t0

    def record_fields(self) -> dict[str, Any]:
        """``epoch_<name>`` for each of ``EPOCH_EXPORTS`` (None when nothing was exported)
        and ``epoch_export_s`` for ``TwoTowerFitRecord``."""
        return {**{f"epoch_{name}": self.arrays.get(name) for name in EPOCH_EXPORTS},
                "epoch_export_s": self.seconds}


def use_user_inputs(model: TorchTwoTower, arrays: Mapping[str, np.ndarray], prefix: str) -> None:
    """Puts the user inputs ``<prefix>user_features`` (and the history columns) into the
    model's stored user rows: prefix ``""`` the training-time inputs, ``"test_"`` the test
    users' (train + val events), as ``RetrievalTask.evaluate`` does with
    ``model.set_user_inputs``."""
    with torch.no_grad():
        model.user_features.copy_(torch.as_tensor(arrays[f"{prefix}user_features"]))
        if model.use_history:
            model.history_ids.copy_(torch.as_tensor(arrays[f"{prefix}history_ids"]))
            model.history_mask.copy_(torch.as_tensor(arrays[f"{prefix}history_mask"]))


def export_for_validation_and_test(model: TorchTwoTower, arrays: Mapping[str, np.ndarray]
                                   ) -> dict[str, np.ndarray]:
    """The model's embeddings with the training-time user inputs (``user_embeddings``,
    ``item_embeddings``) and its user embeddings with the test users' inputs
    (``test_user_embeddings``); the training-time inputs are back in place afterwards."""
    exported = dict(model.export_arrays())
    use_user_inputs(model, arrays, "test_")
    exported["test_user_embeddings"] = model.export_arrays()["user_embeddings"]
    use_user_inputs(model, arrays, "")
    return exported


def fit_torch_two_tower(variant: str, recipe: TwoTowerRecipe, arrays: Mapping[str, np.ndarray],
                        *, init_params: Mapping[str, np.ndarray] | None = None,
                        compile_model: bool = False, start: float | None = None,
                        epoch_embeddings: bool = False, device: str = "cpu"
                        ) -> TwoTowerFitRecord:
    """Trains the PyTorch two-tower for ``recipe.epochs`` epochs and exports its embeddings.

    Args:
      variant: ``"baseline"`` or ``"tuned"``.
      recipe: hyperparameters.
      arrays: training features (``user_features``, ``item_features``, ``history_ids``,
        ``history_mask``), the test users' inputs (``test_user_features``,
        ``test_history_ids``, ``test_history_mask``), the positives (``pos_user``,
        ``pos_item`` and, for causal training, ``pos_user_features``, ``pos_history_ids``,
        ``pos_history_mask``) and ``log_q`` (``[num_items]``, used when ``recipe.logq``).
      init_params: the JAX model's initial parameters (None: PyTorch's default init).
      compile_model: ``torch.compile`` the loss (tuned variant only).
      start: ``time.perf_counter()`` the set-up time is measured from (default: now).
      epoch_embeddings: also export the embeddings after every epoch, outside the timed
        epochs, with the training-time and the test users' inputs
        (``TwoTowerFitRecord.epoch_user_embeddings`` / ``epoch_test_user_embeddings``).
      device: the torch device to train on (``"cpu"``, ``"cuda"``); the model is built (and
        initialised) on the CPU, then moved; the baseline's ``DataLoader`` stays on the host
        and moves each batch, the tuned loop holds the positives on the device.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    start = time.perf_counter() if start is None else start
    model = build_torch_two_tower(arrays, recipe, init_params).to(device)
    positives = {name[len("pos_"):]: arrays[name] for name in arrays if name.startswith("pos_")}
    if recipe.causal_inputs != ("user_features" in positives):
        raise ValueError(f"recipe.causal_inputs is {recipe.causal_inputs} but the positives "
                         f"{'lack' if recipe.causal_inputs else 'carry'} per-pair user inputs")
    log_q = arrays["log_q"] if recipe.logq else None
    trainer = (BaselineTrainer(model, positives, log_q, recipe) if variant == "baseline"
               else TunedTrainer(model, positives, log_q, recipe, compile_model=compile_model))
    setup_s = time.perf_counter() - start
    history, exports = [], EpochExports(recipe.epochs)
    for epoch in range(1, recipe.epochs + 1):
        t0 = time.perf_counter()
        train_loss = trainer.train_epoch(epoch)
        history.append({"epoch": epoch, "train_loss": train_loss,
                        "epoch_time_s": time.perf_counter() - t0})
        if epoch_embeddings:
            # After the epoch's clock stopped.
            exports.add(epoch, lambda: export_for_validation_and_test(model, arrays))
    # Set-up plus the epochs: the per-epoch exports are not training time.
    total_s = time.perf_counter() - start - exports.seconds
    t0 = time.perf_counter()
    # Test users are encoded from their test-time inputs (train + val events).
    use_user_inputs(model, arrays, "test_")
    exported = model.export_arrays()
    return TwoTowerFitRecord(
        variant=variant, setup_s=setup_s, compile_s=0.0, history=history, total_s=total_s,
        export_s=time.perf_counter() - t0, temperature=float(model.temperature.detach()),
        **exported, **exports.record_fields())
