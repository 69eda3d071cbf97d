"""Neural collaborative filtering for implicit feedback (He et al., WWW 2017), and the
dot-product MF that Rendle et al. (RecSys 2020) found beats it when tuned.

Every model maps (user ids, item ids) of equal shape to a *logit* of the same shape: the
probability of an interaction is σ(logit), trained with binary cross-entropy on positives and
sampled negatives (``recsys_jax.tasks.implicit_losses``).

* ``GMF``:    logit = h·(p_u ⊙ q_i) + b                       (a generalised MF)
* ``MLP``:    logit = h·φ_L(… φ_1([p_u, q_i])) + b, φ_l = ReLU(W_l x + b_l), widths halving
              (e.g. layers ``(64, 32, 16, 8)``: embeddings of 32 each, concatenated to 64)
* ``NeuMF``:  logit = h·[p^G_u ⊙ q^G_i, φ_L(…)] + b with separate GMF and MLP embeddings
* ``DotMF``:  logit = μ + b_u + b_i + p_u·q_i                  (no network, no output layer)

GMF, MLP and NeuMF are built from two feature towers (``GMFTower``, ``MLPTower``) and a
``nnx.Linear`` output layer, so NeuMF's towers have exactly the structure of the stand-alone
models' and ``load_pretrained`` can copy them over. Following the paper (and its reference
code), NeuMF's output layer is then ``[α·h_GMF, (1−α)·h_MLP]`` with bias
``α·b_GMF + (1−α)·b_MLP``, α = 0.5.

Embeddings start from N(0, init_std²) (0.01 in the paper); dense layers use Flax's defaults.
Embedding tables (and DotMF's bias vectors) are ``training.tables.Table`` parameters read with
``lookup``, so a row-sparse optimizer (``optimizer.tables``) updates only the rows a step reads;
the output and hidden layers stay dense.
Ids must lie in ``[0, num_users)`` / ``[0, num_items)`` (JAX clamps out-of-range gathers);
the training columns and evaluation inputs are validated before they get here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.tables import Table

DEFAULT_MLP_LAYERS = (64, 32, 16, 8)


def _embedding(rngs: nnx.Rngs, rows: int, dim: int, init_std: float) -> Table:
    init = jax.nn.initializers.normal(stddev=init_std)
    return Table(init(rngs.params(), (rows, dim), jnp.float32))


def _check_sizes(num_users: int, num_items: int, *dims: int) -> None:
    if num_users <= 0 or num_items <= 0 or any(d <= 0 for d in dims):
        raise ValueError(f"sizes must be positive: {num_users} users, {num_items} items, "
                         f"dims {dims}")


class GMFTower(nnx.Module):
    """The GMF features p_u ⊙ q_i (shape ``ids.shape + (dim,)``)."""

    def __init__(self, num_users: int, num_items: int, dim: int, *, rngs: nnx.Rngs,
                 init_std: float = 0.01):
        _check_sizes(num_users, num_items, dim)
        self.dim = dim
        self.user_embedding = _embedding(rngs, num_users, dim, init_std)
        self.item_embedding = _embedding(rngs, num_items, dim, init_std)

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return self.user_embedding.lookup(users) * self.item_embedding.lookup(items)


class MLPTower(nnx.Module):
    """The MLP features φ_L(… φ_1([p_u, q_i])) (shape ``ids.shape + (layers[-1],)``).

    ``layers[0]`` is the width of the concatenated embeddings (each side gets half), every
    later entry the width of one ReLU layer.
    """

    def __init__(self, num_users: int, num_items: int, layers: Sequence[int], *,
                 rngs: nnx.Rngs, init_std: float = 0.01):
        layers = tuple(int(w) for w in layers)
        if len(layers) < 2 or layers[0] % 2:
            raise ValueError(f"MLP layers need an even input width and at least one hidden "
                             f"layer, got {layers}")
        _check_sizes(num_users, num_items, *layers)
        self.layers = layers
        self.user_embedding = _embedding(rngs, num_users, layers[0] // 2, init_std)
        self.item_embedding = _embedding(rngs, num_items, layers[0] // 2, init_std)
        self.hidden = nnx.List([nnx.Linear(w_in, w_out, rngs=rngs)
                                for w_in, w_out in zip(layers[:-1], layers[1:])])

    @property
    def dim(self) -> int:
        return self.layers[-1]

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        x = jnp.concatenate([self.user_embedding.lookup(users),
                             self.item_embedding.lookup(items)], axis=-1)
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return x


def _user_rows(num_users: int, users: np.ndarray) -> np.ndarray:
    mask = np.zeros(num_users, np.bool_)
    mask[np.asarray(users)] = True
    return mask


class _FoldsInUsers:
    """``contract.FoldIn`` for models whose user side is whole tables, one row per user
    (``USER_SIDE`` names them by state path); every model here has trained rows for every
    user id, so ``begin_fold_in`` has nothing to do."""

    USER_SIDE: tuple[str, ...] = ()
    num_users: int

    def begin_fold_in(self, users: np.ndarray) -> None:
        del users

    def user_side_rows(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """The rows of ``users`` in each user-side table (embeddings, user biases)."""
        mask = _user_rows(self.num_users, users)
        return {path: mask for path in self.USER_SIDE}


class _ScoredByTowers(_FoldsInUsers, nnx.Module):
    """Shared id bookkeeping and the logit of a linear output layer over features."""

    num_users: int
    num_items: int
    output: nnx.Linear

    def features(self, users: jax.Array, items: jax.Array) -> jax.Array:
        raise NotImplementedError

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Logits, shape ``users.shape`` (``users`` and ``items`` broadcast together)."""
        users, items = jnp.broadcast_arrays(users, items)
        return self.output(self.features(users, items))[..., 0]


class GMF(_ScoredByTowers):
    """Generalised matrix factorisation: a learnt weighting of p_u ⊙ q_i."""

    USER_SIDE = ("tower/user_embedding",)

    def __init__(self, num_users: int, num_items: int, dim: int = 8, *, rngs: nnx.Rngs,
                 init_std: float = 0.01):
        self.num_users, self.num_items = num_users, num_items
        self.tower = GMFTower(num_users, num_items, dim, rngs=rngs, init_std=init_std)
        self.output = nnx.Linear(dim, 1, rngs=rngs)

    def features(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return self.tower(users, items)


class MLP(_ScoredByTowers):
    """A ReLU tower over the concatenated user and item embeddings."""

    USER_SIDE = ("tower/user_embedding",)

    def __init__(self, num_users: int, num_items: int,
                 layers: Sequence[int] = DEFAULT_MLP_LAYERS, *, rngs: nnx.Rngs,
                 init_std: float = 0.01):
        self.num_users, self.num_items = num_users, num_items
        self.tower = MLPTower(num_users, num_items, layers, rngs=rngs, init_std=init_std)
        self.output = nnx.Linear(self.tower.dim, 1, rngs=rngs)

    def features(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return self.tower(users, items)


class NeuMF(_ScoredByTowers):
    """GMF and MLP towers with separate embeddings, fused by one output layer."""

    USER_SIDE = ("gmf/user_embedding", "mlp/user_embedding")

    def __init__(self, num_users: int, num_items: int, gmf_dim: int = 8,
                 mlp_layers: Sequence[int] = DEFAULT_MLP_LAYERS, *, rngs: nnx.Rngs,
                 init_std: float = 0.01):
        self.num_users, self.num_items = num_users, num_items
        self.gmf = GMFTower(num_users, num_items, gmf_dim, rngs=rngs, init_std=init_std)
        self.mlp = MLPTower(num_users, num_items, mlp_layers, rngs=rngs, init_std=init_std)
        self.output = nnx.Linear(gmf_dim + self.mlp.dim, 1, rngs=rngs)

    def features(self, users: jax.Array, items: jax.Array) -> jax.Array:
        return jnp.concatenate([self.gmf(users, items), self.mlp(users, items)], axis=-1)


def load_pretrained(neumf: NeuMF, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
    """Initialises ``neumf`` in place from trained ``gmf`` and ``mlp`` (He et al. 2017, §3.4.1).

    The towers (embeddings and hidden layers) are copied; the output layer becomes
    ``kernel = [α·h_GMF; (1−α)·h_MLP]``, ``bias = α·b_GMF + (1−α)·b_MLP``, so at α = 0.5 the
    initial NeuMF logit is the mean of the two pretrained models' logits.

    Raises:
      ValueError: when the shapes of the pretrained models differ from ``neumf``'s.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    for name, target, source in (("GMF", neumf.gmf, gmf.tower), ("MLP", neumf.mlp, mlp.tower)):
        want = jax.tree.map(jnp.shape, nnx.state(target, nnx.Param))
        have = jax.tree.map(jnp.shape, nnx.state(source, nnx.Param))
        if want != have:
            raise ValueError(f"pretrained {name} does not fit NeuMF's {name} tower: "
                             f"{have} vs {want}")
        # Copies (not references), so training NeuMF leaves the pretrained models intact.
        nnx.update(target, jax.tree.map(jnp.array, nnx.state(source, nnx.Param)))
    kernel = jnp.concatenate([alpha * gmf.output.kernel[...],
                              (1.0 - alpha) * mlp.output.kernel[...]], axis=0)
    neumf.output.kernel[...] = kernel
    neumf.output.bias[...] = alpha * gmf.output.bias[...] + (1.0 - alpha) * mlp.output.bias[...]


class DotMF(_FoldsInUsers, nnx.Module):
    """Dot-product MF with biases for implicit feedback: logit = μ + b_u + b_i + p_u·q_i.

    Unlike the explicit-rating ``MatrixFactorization`` there is no seen-mask fallback: under
    the implicit protocols every evaluated user has training interactions, and an item nobody
    interacted with only ever receives negative gradients, which is the right signal.
    """

    USER_SIDE = ("user_embedding", "user_bias")

    def __init__(self, num_users: int, num_items: int, dim: int = 64, *, rngs: nnx.Rngs,
                 init_std: float = 0.01):
        _check_sizes(num_users, num_items, dim)
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.user_embedding = _embedding(rngs, num_users, dim, init_std)
        self.item_embedding = _embedding(rngs, num_items, dim, init_std)
        self.user_bias = Table(jnp.zeros((num_users,), jnp.float32))
        self.item_bias = Table(jnp.zeros((num_items,), jnp.float32))
        self.global_bias = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Logits, shape ``users.shape`` (``users`` and ``items`` broadcast together)."""
        users, items = jnp.broadcast_arrays(users, items)
        p = self.user_embedding.lookup(users)
        q = self.item_embedding.lookup(items)
        return (self.global_bias[...] + self.user_bias.lookup(users)
                + self.item_bias.lookup(items) + jnp.sum(p * q, axis=-1))

    def row_l2(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """‖p_u‖² + ‖q_i‖² + b_u² + b_i² per (user, item) pair (broadcast together): the L2 of
        the rows a pair's logit reads (``contract.RowRegularized``; ``training.l2_reg``)."""
        users, items = jnp.broadcast_arrays(users, items)
        p = self.user_embedding.lookup(users)
        q = self.item_embedding.lookup(items)
        return (jnp.sum(p * p, axis=-1) + jnp.sum(q * q, axis=-1)
                + jnp.square(self.user_bias.lookup(users))
                + jnp.square(self.item_bias.lookup(items)))

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item vectors whose dot products rank items as the logits do:
        [p_u, 1]·[q_i, b_i] = p_u·q_i + b_i (μ + b_u is the same for all of a user's items)."""
        users = np.concatenate([np.asarray(self.user_embedding[...]),
                                np.ones((self.num_users, 1), np.float32)], axis=1)
        items = np.concatenate([np.asarray(self.item_embedding[...]),
                                np.asarray(self.item_bias[...])[:, None]], axis=1)
        return users.astype(np.float32), items.astype(np.float32)


def build_gmf(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
              train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> GMF:
    """Registry builder; config fields ``dim`` (8), ``init_std`` (0.01)."""
    del train  # Sized by the id spaces alone.
    return GMF(num_users, num_items, int(model_config.get("dim", 8)), rngs=rngs,
               init_std=float(model_config.get("init_std", 0.01)))


def build_mlp(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
              train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> MLP:
    """Registry builder; config fields ``mlp_layers`` ((64, 32, 16, 8)), ``init_std``."""
    del train
    return MLP(num_users, num_items, tuple(model_config.get("mlp_layers", DEFAULT_MLP_LAYERS)),
               rngs=rngs, init_std=float(model_config.get("init_std", 0.01)))


def build_neumf(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> NeuMF:
    """Registry builder; config fields ``dim`` (GMF part, 8), ``mlp_layers``, ``init_std``.

    Pretraining (``model.pretrained``) is applied by the experiment, which knows where the
    GMF and MLP runs are (``recsys_jax.tasks.implicit``).
    """
    del train
    return NeuMF(num_users, num_items, int(model_config.get("dim", 8)),
                 tuple(model_config.get("mlp_layers", DEFAULT_MLP_LAYERS)), rngs=rngs,
                 init_std=float(model_config.get("init_std", 0.01)))


def build_dot_mf(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                 train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> DotMF:
    """Registry builder; config fields ``dim`` (64), ``init_std`` (0.01)."""
    del train
    return DotMF(num_users, num_items, int(model_config.get("dim", 64)), rngs=rngs,
                 init_std=float(model_config.get("init_std", 0.01)))
