"""Biased matrix factorisation in PyTorch, written the way a PyTorch user writes it.

    r̂(u, i) = μ + b_u + b_i + p_u · q_i

The same model as ``recsys_jax.models.mf.MatrixFactorization`` with its default ``"zero"``
fallback: p, q ~ N(0, init_std²), biases 0, μ a learnable scalar initialised to the training
mean, and a boolean seen mask per side (a buffer, not trained) so a user or item without
training ratings is served by the biases and μ only. Parameter names follow PyTorch habits
(``nn.Embedding`` tables, biases as one-column embeddings); ``export_arrays`` /
``load_arrays`` convert to and from the JAX model's exported NumPy arrays, so both models can
be scored by the same evaluation code and loaded with the same weights.

With ``sparse=True`` the four tables are ``nn.Embedding(sparse=True)``: their gradients are
sparse tensors holding only the rows a batch read, PyTorch's idiomatic input to
``torch.optim.SparseAdam`` (the ``sparse`` training variant, the counterpart of the JAX
``optimizer.tables=lazy_adam``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

# Names of the arrays exchanged with recsys_jax (``MatrixFactorization.export_arrays``).
ARRAY_NAMES = ("user_embeddings", "item_embeddings", "user_bias", "item_bias", "global_mean",
               "user_seen", "item_seen")


class TorchMF(nn.Module):
    """User/item embeddings, user/item biases and a global mean."""

    def __init__(self, num_users: int, num_items: int, dim: int, *, init_std: float = 0.01,
                 global_mean: float = 0.0, sparse: bool = False):
        """Creates the parameters; every id counts as seen until ``mark_seen`` is called.

        Args:
          num_users: number of user rows.
          num_items: number of item rows.
          dim: embedding dimension.
          init_std: standard deviation of the normal embedding initialiser.
          global_mean: initial μ, normally the mean training rating.
          sparse: sparse gradients for the embedding and bias tables (``SparseAdam``).
        """
        super().__init__()
        if num_users <= 0 or num_items <= 0 or dim <= 0:
            raise ValueError(f"num_users, num_items and dim must be positive, got "
                             f"{num_users}, {num_items}, {dim}")
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_embedding = nn.Embedding(num_users, dim, sparse=sparse)
        self.item_embedding = nn.Embedding(num_items, dim, sparse=sparse)
        self.user_bias = nn.Embedding(num_users, 1, sparse=sparse)
        self.item_bias = nn.Embedding(num_items, 1, sparse=sparse)
        self.global_mean = nn.Parameter(torch.tensor(float(global_mean)))
        # nn.Embedding's default init is N(0, 1); the recipe (and the JAX model) use N(0, 0.01²).
        nn.init.normal_(self.user_embedding.weight, std=init_std)
        nn.init.normal_(self.item_embedding.weight, std=init_std)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("user_seen", torch.ones(num_users, dtype=torch.bool))
        self.register_buffer("item_seen", torch.ones(num_items, dtype=torch.bool))

    @torch.no_grad()
    def mark_seen(self, users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor
                  ) -> None:
        """Sets the seen masks to exactly the ids present in the training interactions."""
        self.user_seen.zero_()
        self.item_seen.zero_()
        self.user_seen[torch.as_tensor(np.asarray(users), dtype=torch.long)] = True
        self.item_seen[torch.as_tensor(np.asarray(items), dtype=torch.long)] = True

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted ratings, shape ``users.shape``, for int64 id tensors of equal shape."""
        user_known = self.user_seen[users]
        item_known = self.item_seen[items]
        interaction = (self.user_embedding(users) * self.item_embedding(items)).sum(-1)
        # torch.where, not multiplication by the mask: unseen rows never reach the output, so
        # their gradient is exactly zero (as in the JAX model).
        interaction = torch.where(user_known & item_known, interaction, 0.0)
        user_bias = torch.where(user_known, self.user_bias(users).squeeze(-1), 0.0)
        item_bias = torch.where(item_known, self.item_bias(items).squeeze(-1), 0.0)
        return self.global_mean + user_bias + item_bias + interaction

    def export_arrays(self) -> dict[str, np.ndarray]:
        """The learnt tables as NumPy, named as ``recsys_jax``'s exported ``.npy`` files."""
        def numpy(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().copy()
        return {
            "user_embeddings": numpy(self.user_embedding.weight),
            "item_embeddings": numpy(self.item_embedding.weight),
            "user_bias": numpy(self.user_bias.weight[:, 0]),
            "item_bias": numpy(self.item_bias.weight[:, 0]),
            "global_mean": numpy(self.global_mean),
            "user_seen": numpy(self.user_seen),
            "item_seen": numpy(self.item_seen),
        }

    @torch.no_grad()
    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copies weights exported by either framework (``export_arrays`` names) into the model.

        Raises:
          ValueError: when an array is missing or has the wrong shape.
        """
        missing = [name for name in ARRAY_NAMES if name not in arrays]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        targets = {
            "user_embeddings": self.user_embedding.weight,
            "item_embeddings": self.item_embedding.weight,
            "user_bias": self.user_bias.weight[:, 0],
            "item_bias": self.item_bias.weight[:, 0],
            "global_mean": self.global_mean,
            "user_seen": self.user_seen,
            "item_seen": self.item_seen,
        }
        for name, target in targets.items():
            value = torch.from_numpy(np.array(arrays[name]))  # A copy: inputs may be read-only.
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name}: expected shape {tuple(target.shape)}, got "
                                 f"{tuple(value.shape)}")
            target.copy_(value.to(target.dtype))

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, sparse: bool = False) -> TorchMF:
        """A model holding exactly the given exported arrays (sparse tables if ``sparse``)."""
        num_users, dim = np.shape(arrays["user_embeddings"])
        model = cls(num_users, np.shape(arrays["item_embeddings"])[0], dim, sparse=sparse)
        model.load_arrays(arrays)
        return model


def build_torch_mf(num_users: int, num_items: int, dim: int, train_ratings: np.ndarray,
                   train_users: np.ndarray, train_items: np.ndarray, *, init_std: float = 0.01,
                   seed: int = 0, sparse: bool = False) -> TorchMF:
    """The recipe's model: μ = train mean, seen masks from the training ids, seeded init
    (sparse tables if ``sparse``)."""
    torch.manual_seed(seed)
    ratings = np.asarray(train_ratings, np.float64)
    model = TorchMF(num_users, num_items, dim, init_std=init_std,
                    global_mean=float(ratings.mean()) if ratings.size else 0.0, sparse=sparse)
    model.mark_seen(train_users, train_items)
    return model


@torch.no_grad()
def predict(model: nn.Module, users: np.ndarray, items: np.ndarray, *,
            chunk_size: int = 65536) -> np.ndarray:
    """Raw (unclipped) float32 predictions for id pairs, in eval mode and chunks.

    Raises:
      ValueError: for ids outside the model's tables (PyTorch would raise an IndexError deep
        inside the gather; JAX would clamp silently).
    """
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(f"users and items must be 1-D of equal length, got {users.shape} and "
                         f"{items.shape}")
    for name, ids, n in (("user", users, model.num_users), ("item", items, model.num_items)):
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{name} ids must lie in [0, {n}), got range "
                             f"[{ids.min()}, {ids.max()}]")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(torch.from_numpy(users[s:s + chunk_size]).to(device),
                 torch.from_numpy(items[s:s + chunk_size]).to(device)).cpu().numpy()
           for s in range(0, len(users), chunk_size)]
    model.train(was_training)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)
