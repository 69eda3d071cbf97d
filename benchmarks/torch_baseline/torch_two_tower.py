"""The two-tower retrieval model and its in-batch softmax loss in PyTorch.

Mirrors ``recsys_jax.models.two_tower.TwoTower``: each tower is
``nn.Sequential(Linear, ReLU, Linear, LayerNorm)`` followed by L2 normalisation; scores are
cosines divided by a learnable temperature τ (stored as log τ, clipped to [1e-3, 1]); inputs are
fixed feature rows held as buffers so batches carry only ids (or, for causal training, each
pair's own user inputs); optional learnt id embeddings and the mean-pooled (optionally
position-weighted) item-tower embeddings of each user's recent history. ``load_jax_params`` copies
a trained JAX model's parameters in (``nnx.Linear`` keeps kernels as ``[in, out]``, PyTorch as
``[out, in]``), so both produce the same embeddings.

Training loops: ``two_tower_training``; benchmark: ``two_tower_benchmark``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1.0
# As recsys_jax.models.two_tower: position weights are exp(scale · parameter).
HISTORY_POSITION_SCALE = 10.0
# nnx.LayerNorm's default epsilon (PyTorch's default is 1e-5).
LAYER_NORM_EPS = 1e-6


def tower(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → ReLU → Linear → LayerNorm (L2 normalisation is applied by the caller)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim),
                         nn.LayerNorm(out_dim, eps=LAYER_NORM_EPS))


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / ‖x‖ with the JAX model's floor (‖x‖² ≥ 1e-12)."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))


class TorchTwoTower(nn.Module):
    """User and item towers over stored feature tables, with a learnable temperature."""

    def __init__(self, user_features: np.ndarray, item_features: np.ndarray, *,
                 hidden_dim: int = 256, dim: int = 128, temperature: float = 0.07,
                 history_ids: np.ndarray | None = None, history_mask: np.ndarray | None = None,
                 user_id_dim: int = 0, item_id_dim: int = 0, id_init_std: float = 0.01,
                 history_positions: bool = False):
        """Arguments as ``recsys_jax.models.two_tower.TwoTower`` (PyTorch's default layer init)."""
        super().__init__()
        if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must lie in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]")
        self.num_users, user_dim = map(int, np.shape(user_features))
        self.num_items, item_dim = map(int, np.shape(item_features))
        self.dim = dim
        self.register_buffer("user_features", torch.as_tensor(np.array(user_features, np.float32)))
        self.register_buffer("item_features", torch.as_tensor(np.array(item_features, np.float32)))
        self.use_history = history_ids is not None and np.shape(history_ids)[1] > 0
        if self.use_history:
            self.register_buffer("history_ids", torch.as_tensor(np.array(history_ids, np.int64)))
            self.register_buffer("history_mask",
                                 torch.as_tensor(np.array(history_mask, np.float32)))
        self.history_positions = bool(history_positions) and self.use_history
        if self.history_positions:
            self.history_position_logits = nn.Parameter(torch.zeros(np.shape(history_ids)[1]))
        self.user_id_dim, self.item_id_dim = int(user_id_dim), int(item_id_dim)
        if self.user_id_dim:
            self.user_id_embedding = nn.Embedding(self.num_users, self.user_id_dim)
            nn.init.normal_(self.user_id_embedding.weight, std=id_init_std)
        if self.item_id_dim:
            self.item_id_embedding = nn.Embedding(self.num_items, self.item_id_dim)
            nn.init.normal_(self.item_id_embedding.weight, std=id_init_std)
        user_in = user_dim + self.user_id_dim + (dim if self.use_history else 0)
        self.user_tower = tower(user_in, hidden_dim, dim)
        self.item_tower = tower(item_dim + self.item_id_dim, hidden_dim, dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> torch.Tensor:
        """τ = exp(clip(log τ)), always in [MIN_TEMPERATURE, MAX_TEMPERATURE]."""
        return torch.exp(torch.clamp(self.log_temperature, math.log(MIN_TEMPERATURE),
                                     math.log(MAX_TEMPERATURE)))

    def item_embeddings(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of catalogue items by encoded id."""
        x = self.item_features[item_ids]
        if self.item_id_dim:
            x = torch.cat([x, self.item_id_embedding(item_ids)], -1)
        return l2_normalize(self.item_tower(x))

    def pooled_history(self, history_ids: torch.Tensor, history_mask: torch.Tensor,
                       item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Masked (position-weighted, with ``history_positions``) mean of the item-tower
        embeddings of ``history_ids`` (``item_table``: all item embeddings, if computed)."""
        table = self.item_embeddings(torch.arange(self.num_items, device=self.device)) \
            if item_table is None else item_table
        weights = history_mask
        if self.history_positions:
            logits = HISTORY_POSITION_SCALE * self.history_position_logits[:history_ids.shape[-1]]
            weights = weights * torch.exp(logits - logits.max())
        pooled = (table[history_ids] * weights[..., None]).sum(-2)
        return pooled / torch.clamp(weights.sum(-1), min=1e-6)[..., None]

    def encode_users(self, features: torch.Tensor, user_ids: torch.Tensor,
                     history_ids: torch.Tensor | None = None,
                     history_mask: torch.Tensor | None = None,
                     item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm user embeddings from standardised feature rows (plus the history when
        the model pools one; ``item_table`` as in ``pooled_history``)."""
        parts = [features]
        if self.user_id_dim:
            parts.append(self.user_id_embedding(user_ids))
        if self.use_history:
            parts.append(self.pooled_history(history_ids, history_mask, item_table))
        return l2_normalize(self.user_tower(torch.cat(parts, -1)))

    def user_embeddings(self, user_ids: torch.Tensor,
                        item_table: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm embeddings of known users by encoded id (their stored inputs)."""
        if self.use_history:
            return self.encode_users(self.user_features[user_ids], user_ids,
                                     self.history_ids[user_ids], self.history_mask[user_ids],
                                     item_table)
        return self.encode_users(self.user_features[user_ids], user_ids)

    def forward(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """Cosine scores of (user, item) pairs of equal shape."""
        return (self.user_embeddings(user_ids) * self.item_embeddings(item_ids)).sum(-1)

    @property
    def device(self) -> torch.device:
        """Where the model's tensors live."""
        return self.item_features.device

    @torch.no_grad()
    def export_arrays(self, chunk_size: int = 8192) -> dict[str, np.ndarray]:
        """``user_embeddings`` and ``item_embeddings`` as float32 NumPy (rows = encoded ids),
        the arrays the evaluation suite scores."""
        was_training = self.training
        self.eval()
        out = {}
        for name, n, fn in (("user_embeddings", self.num_users, self.user_embeddings),
                            ("item_embeddings", self.num_items, self.item_embeddings)):
            out[name] = torch.cat([fn(torch.arange(s, min(s + chunk_size, n),
                                                   device=self.device))
                                   for s in range(0, n, chunk_size)]).cpu().numpy().astype(
                                       np.float32)
        self.train(was_training)
        return out

    @torch.no_grad()
    def load_jax_params(self, flat: Mapping[str, Any]) -> None:
        """Copies parameters of a JAX ``TwoTower`` in.

        Args:
          flat: ``"path/to/param" -> array``, as ``save_two_tower`` writes them
            (``nnx.to_flat_state(nnx.state(model, nnx.Param))`` joined with ``/``).

        Raises:
          ValueError: when a parameter is missing or has another shape.
        """
        def copy(key: str, target: torch.Tensor, transpose: bool = False) -> None:
            if key not in flat:
                raise ValueError(f"missing JAX parameter {key!r}")
            value = np.asarray(flat[key], np.float32)
            value = value.T if transpose else value
            if value.shape != tuple(target.shape):
                raise ValueError(f"{key}: expected shape {tuple(target.shape)}, got "
                                 f"{value.shape}")
            target.copy_(torch.from_numpy(np.array(value, order="C")))  # 0-d stays 0-d.

        for side in ("user", "item"):
            layers = getattr(self, f"{side}_tower")
            for jax_name, index in (("hidden", 0), ("out", 2)):
                copy(f"{side}_tower/{jax_name}/kernel", layers[index].weight, transpose=True)
                copy(f"{side}_tower/{jax_name}/bias", layers[index].bias)
            copy(f"{side}_tower/norm/scale", layers[3].weight)
            copy(f"{side}_tower/norm/bias", layers[3].bias)
            if getattr(self, f"{side}_id_dim"):
                copy(f"{side}_id_embedding", getattr(self, f"{side}_id_embedding").weight)
        if self.history_positions:
            copy("history_position_logits", self.history_position_logits)
        copy("log_temperature", self.log_temperature)


def in_batch_softmax_loss(user_vectors: torch.Tensor, item_vectors: torch.Tensor,
                          item_ids: torch.Tensor, temperature: torch.Tensor, *,
                          candidate_log_q: torch.Tensor | None = None,
                          remove_accidental_hits: bool = True) -> torch.Tensor:
    """Mean cross-entropy of each row's own item among the batch's items (the PyTorch way:
    ``F.cross_entropy`` over the ``[B, B]`` similarity matrix with targets ``arange(B)``).

    ``candidate_log_q`` (``[B]``) applies the logQ correction; ``remove_accidental_hits``
    masks columns holding the row's own item elsewhere in the batch — both as in
    ``recsys_jax.tasks.retrieval_losses.in_batch_softmax_loss`` (in-batch only, no random
    negatives, every row real).
    """
    logits = user_vectors @ item_vectors.T / temperature
    if candidate_log_q is not None:
        logits = logits - candidate_log_q[None, :]
    if remove_accidental_hits:
        b = len(item_ids)
        hit = (item_ids[None, :] == item_ids[:, None]) & ~torch.eye(b, dtype=torch.bool)
        logits = logits.masked_fill(hit, -1e9)
    return F.cross_entropy(logits, torch.arange(len(item_ids)))
