"""iALS: implicit alternating least squares (Hu et al. 2008; Rendle et al. 2022's recipe).

Scores are dot products p_u · q_i of user and item factors (``RankingEmbedder``). The fit
minimises, over the binary training matrix with observed pairs S,

    L = α Σ_{(u,i)∈S} (p_u·q_i − 1)² + α₀ Σ_{(u,i)∉S} (p_u·q_i)²
        + Σ_u λ_u ‖p_u‖² + Σ_i λ_i ‖q_i‖²,
    λ_u = λ (|I_u| + α₀ |I|)^ν,   λ_i = λ (|U_i| + α₀ |U|)^ν,

by alternating steps: all user vectors with the items fixed, then all item vectors with the
users fixed. A user step solves, for every user at once,

    (α₀ QᵀQ + (α − α₀) Σ_{i∈I_u} q_i q_iᵀ + λ_u I) p_u = α Σ_{i∈I_u} q_i

(the Gramian QᵀQ carries the unobserved pairs, so the cost is in the observed ones). Hu et
al.'s weighting (and `implicit`'s ``AlternatingLeastSquares(alpha=c, regularization=λ)``) is
α = c, α₀ = 1, ν = 0; Rendle et al. (2022) use α = 1, a small α₀ and ν = 1.

Solvers (``model.solver``):

* ``"cg"`` (default): ``model.cg_steps`` conjugate-gradient steps per row, warm-started from
  the current vectors (Takács et al. 2011; what `implicit` does on the CPU, 3 steps). Each step
  needs the products A p: α₀ (P QᵀQ) + λ p plus a sparse product. Every sum over a row's
  interactions is a CSR sparse × dense product (``jax.experimental.sparse.BCSR``; a segment
  sum over the interaction list, never padded to the longest history). The row's dots
  s_ui = p_u · q_i at its interactions come from ``model.sampled_dots``: ``"dense"`` samples
  P Qᵀ (one ``[rows, other side]`` matrix product: on a CPU faster than gathering
  ``[interactions, dim]`` rows at ML-100K's density), ``"gather"`` gathers rows in chunks of
  ``GATHER_CHUNK`` interactions (memory independent of the catalogue); ``"auto"`` picks dense
  up to ``model.max_dense_scores`` (2^26) entries.
* ``"exact"``: the normal equations formed and solved (Cholesky), every row at once. Forming
  Σ q_i q_iᵀ costs interactions × dim² and keeps ``[rows, dim, dim]``: for small dims and tests.

The loss never increases from one half step to the next: each exact solve minimises L over its
side, and CG steps from the current vector decrease the same convex quadratic.

Test users (``contract.UserRefit``): ``refit_users`` solves their vectors from their train +
val events with the items fixed: exactly one user step on those events.

Config (``model`` block): ``dim`` (factors), ``iterations``, ``alpha`` (α), ``unobserved_weight``
(α₀), ``l2`` (λ), ``reg_exponent`` (ν), ``solver``, ``cg_steps``, ``init_std`` (initial factors
~ N(0, init_std² / dim)), ``sampled_dots``, ``max_dense_scores``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import sparse as jsparse

from recsys_jax.models.fitted import Fitted

SOLVERS = ("cg", "exact")
SAMPLED_DOTS = ("auto", "dense", "gather")
GATHER_CHUNK = 1 << 15
DEFAULT_MAX_DENSE_SCORES = 1 << 26


@dataclasses.dataclass(frozen=True)
class IALSSettings:
    """The model config's numbers (hashable: the compiled steps are specialised on them)."""

    dim: int = 128
    iterations: int = 15
    alpha: float = 1.0
    unobserved_weight: float = 1.0
    l2: float = 0.1
    reg_exponent: float = 0.0
    solver: str = "cg"
    cg_steps: int = 3
    init_std: float = 0.1
    sampled_dots: str = "auto"
    max_dense_scores: int = DEFAULT_MAX_DENSE_SCORES

    def __post_init__(self):
        problems = []
        if self.dim < 1 or self.iterations < 0 or self.cg_steps < 1:
            problems.append("dim and cg_steps must be >= 1, iterations >= 0")
        if not (self.alpha > 0 and self.unobserved_weight >= 0 and self.l2 > 0
                and self.reg_exponent >= 0 and self.init_std >= 0):
            problems.append("alpha and l2 must be > 0; unobserved_weight, reg_exponent and "
                            "init_std >= 0")
        if self.solver not in SOLVERS or self.sampled_dots not in SAMPLED_DOTS:
            problems.append(f"solver must be one of {SOLVERS}, sampled_dots one of "
                            f"{SAMPLED_DOTS}")
        if problems:
            raise ValueError(f"bad iALS settings {self}: " + "; ".join(problems))

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> IALSSettings:
        """The settings of a ``model`` config block (missing fields keep the defaults)."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{name: model_config[name] for name in fields if name in model_config})


class Side(NamedTuple):
    """One side's interactions as CSR (rows sorted), plus chunked copies for gathering.

    ``rows``/``cols``: int32 ``[interactions]``; ``starts``: int32 ``[num_rows + 1]``;
    ``row_chunks``/``col_chunks``: ``[chunks, GATHER_CHUNK]`` (padded with 0), or empty.
    """

    rows: jax.Array
    cols: jax.Array
    starts: jax.Array
    row_chunks: jax.Array
    col_chunks: jax.Array


def make_side(rows: np.ndarray, cols: np.ndarray, num_rows: int, *, chunked: bool) -> Side:
    """The CSR ``Side`` of interactions ``(rows[e], cols[e])`` (pairs assumed distinct)."""
    rows, cols = np.asarray(rows, np.int32), np.asarray(cols, np.int32)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    starts = np.r_[0, np.cumsum(np.bincount(rows, minlength=num_rows))].astype(np.int32)
    chunks = np.zeros((0, GATHER_CHUNK), np.int32), np.zeros((0, GATHER_CHUNK), np.int32)
    if chunked:
        n = -(-len(rows) // GATHER_CHUNK) * GATHER_CHUNK
        chunks = tuple(np.pad(a, (0, n - len(a))).reshape(-1, GATHER_CHUNK)
                       for a in (rows, cols))
    return Side(*(jnp.asarray(a) for a in (rows, cols, starts, *chunks)))


def row_regularization(counts: np.ndarray, num_other: int, s: IALSSettings) -> np.ndarray:
    """λ_r = λ (|row's interactions| + α₀ · num_other)^ν, float32 per row."""
    return (s.l2 * np.power(np.asarray(counts, np.float64) + s.unobserved_weight * num_other,
                            s.reg_exponent)).astype(np.float32)


def _dense_dots(num_rows: int, num_other: int, s: IALSSettings) -> bool:
    if s.sampled_dots != "auto":
        return s.sampled_dots == "dense"
    return num_rows * num_other <= s.max_dense_scores


def _sampled_dots(x: jax.Array, y: jax.Array, side: Side, dense: bool) -> jax.Array:
    """x_r · y_c at every interaction (r, c) of ``side``, in its order."""
    if dense:
        return (x @ y.T)[side.rows, side.cols]
    dots = jax.lax.map(lambda rc: jnp.sum(x[rc[0]] * y[rc[1]], axis=-1),
                       (side.row_chunks, side.col_chunks))
    return dots.reshape(-1)[:side.rows.shape[0]]


def _spmm(values: jax.Array, side: Side, dense: jax.Array, num_rows: int) -> jax.Array:
    """Σ over each row's interactions of values[e] · dense[col_e]: ``[num_rows, ...]``."""
    matrix = jsparse.BCSR((values, side.cols, side.starts), shape=(num_rows, dense.shape[0]))
    return matrix @ dense


def solve_rows(x: jax.Array, y: jax.Array, side: Side, reg: jax.Array, s: IALSSettings,
               dense: bool) -> jax.Array:
    """One half step: every row of ``x`` solved against the fixed ``y`` on ``side``.

    ``reg`` holds λ_r per row; with ``solver="cg"`` the solve starts from ``x``.
    """
    n, d = x.shape
    a, a0 = s.alpha, s.unobserved_weight
    gram = a0 * (y.T @ y)
    b = _spmm(jnp.full(side.rows.shape, a, x.dtype), side, y, n)
    if s.solver == "exact":
        outer = (y[:, :, None] * y[:, None, :]).reshape(y.shape[0], d * d)
        observed = _spmm(jnp.full(side.rows.shape, a - a0, x.dtype), side, outer, n)
        lhs = gram[None] + observed.reshape(n, d, d) + reg[:, None, None] * jnp.eye(d)
        factor = jax.scipy.linalg.cho_factor(lhs)
        return jax.scipy.linalg.cho_solve(factor, b[..., None])[..., 0]

    def matvec(p):
        dots = _sampled_dots(p, y, side, dense) * (a - a0)
        return p @ gram + reg[:, None] * p + _spmm(dots, side, y, n)

    def safe_ratio(num, den):
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

    r = b - matvec(x)
    rs = jnp.sum(r * r, axis=-1, keepdims=True)

    def cg_step(_, carry):
        x, r, p, rs = carry
        ap = matvec(p)
        step = safe_ratio(rs, jnp.sum(p * ap, axis=-1, keepdims=True))
        x, r = x + step * p, r - step * ap
        rs_new = jnp.sum(r * r, axis=-1, keepdims=True)
        return x, r, r + safe_ratio(rs_new, rs) * p, rs_new

    return jax.lax.fori_loop(0, s.cg_steps, cg_step, (x, r, r, rs))[0]


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _iteration(users: jax.Array, items: jax.Array, user_side: Side, item_side: Side,
               user_reg: jax.Array, item_reg: jax.Array, s: IALSSettings, dense_users: bool,
               dense_items: bool) -> tuple[jax.Array, jax.Array]:
    users = solve_rows(users, items, user_side, user_reg, s, dense_users)
    items = solve_rows(items, users, item_side, item_reg, s, dense_items)
    return users, items


@functools.partial(jax.jit, static_argnums=(4, 5))
def _user_step(users: jax.Array, items: jax.Array, user_side: Side, user_reg: jax.Array,
               s: IALSSettings, dense: bool) -> jax.Array:
    return solve_rows(users, items, user_side, user_reg, s, dense)


@functools.partial(jax.jit, static_argnums=5)
def ials_loss(users: jax.Array, items: jax.Array, user_side: Side, user_reg: jax.Array,
              item_reg: jax.Array, s: IALSSettings) -> jax.Array:
    """L of the module docstring (unobserved pairs through the Gramians: Σ_all (p·q)² =
    ⟨PᵀP, QᵀQ⟩)."""
    dots = jnp.sum(users[user_side.rows] * items[user_side.cols], axis=-1)
    everything = jnp.sum((users.T @ users) * (items.T @ items))
    observed = jnp.sum(s.alpha * (dots - 1.0) ** 2 - s.unobserved_weight * dots ** 2)
    return (s.unobserved_weight * everything + observed
            + jnp.sum(user_reg * jnp.sum(users ** 2, -1))
            + jnp.sum(item_reg * jnp.sum(items ** 2, -1)))


# Compiled iterations by (settings, dots, argument shapes): a refit of the same problem (a
# sweep's trials, a test) reuses the executable, and its compile time is reported as 0.
_COMPILED: dict[Any, Any] = {}


def _compiled_iteration(args: tuple, s: IALSSettings, dense: tuple[bool, bool]
                        ) -> tuple[Any, float]:
    key = (s, dense, jax.tree.map(lambda a: (a.shape, str(a.dtype)), args))
    if key not in _COMPILED:
        t0 = time.perf_counter()
        _COMPILED.clear()  # one problem at a time: executables hold on to memory
        _COMPILED[key] = _iteration.lower(*args, s, *dense).compile()
        return _COMPILED[key], time.perf_counter() - t0
    return _COMPILED[key], 0.0


class IALS(nnx.Module):
    """User and item factors fitted by alternating least squares (module docstring).

    Attributes:
      user_factors, item_factors: ``Fitted`` float32 ``[num_users | num_items, dim]``.
    """

    def __init__(self, num_users: int, num_items: int, settings: IALSSettings, *,
                 rngs: nnx.Rngs):
        self.num_users, self.num_items, self.settings = num_users, num_items, settings
        std = settings.init_std / math.sqrt(settings.dim)
        self.user_factors = Fitted(std * jax.random.normal(
            rngs.params(), (num_users, settings.dim), jnp.float32))
        self.item_factors = Fitted(std * jax.random.normal(
            rngs.params(), (num_items, settings.dim), jnp.float32))

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array:
        users, items = jnp.broadcast_arrays(users, items)
        return jnp.sum(self.user_factors[...][users] * self.item_factors[...][items], -1)

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.user_factors[...]), np.asarray(self.item_factors[...])

    def sides(self, events: Mapping[str, np.ndarray]) -> tuple[Side, Side, jax.Array,
                                                                jax.Array]:
        """``(user side, item side, λ_u, λ_i)`` of the event columns ``user``, ``item``."""
        s, u, i = self.settings, np.asarray(events["user"]), np.asarray(events["item"])
        user_side = make_side(u, i, self.num_users,
                              chunked=not _dense_dots(self.num_users, self.num_items, s))
        item_side = make_side(i, u, self.num_items,
                              chunked=not _dense_dots(self.num_items, self.num_users, s))
        user_reg = row_regularization(np.bincount(u, minlength=self.num_users),
                                      self.num_items, s)
        item_reg = row_regularization(np.bincount(i, minlength=self.num_items),
                                      self.num_users, s)
        return user_side, item_side, jnp.asarray(user_reg), jnp.asarray(item_reg)

    def fit(self, train: Mapping[str, np.ndarray], config: Any = None) -> dict[str, Any]:
        """``settings.iterations`` alternating steps on the training events, in place.

        Returns the facts: iterations, solver, seconds compiling (apart) and solving.
        """
        del config
        s = self.settings
        user_side, item_side, user_reg, item_reg = self.sides(train)
        dense = (_dense_dots(self.num_users, self.num_items, s),
                 _dense_dots(self.num_items, self.num_users, s))
        users, items = self.user_factors[...], self.item_factors[...]
        step, compile_s = _compiled_iteration(
            (users, items, user_side, item_side, user_reg, item_reg), s, dense)
        t0 = time.perf_counter()
        for _ in range(s.iterations):
            users, items = step(users, items, user_side, item_side, user_reg, item_reg)
        jax.block_until_ready((users, items))
        solve_s = time.perf_counter() - t0
        self.user_factors.set_value(users)
        self.item_factors.set_value(items)
        logging.info("iALS: %d iterations (%s) in %.2fs after %.2fs compiling", s.iterations,
                     s.solver, solve_s, compile_s)
        return {"iterations": s.iterations, "solver": s.solver,
                "sampled_dots": "dense" if dense[0] else "gather",
                "compile_time_s": compile_s, "solve_time_s": solve_s}

    def loss(self, events: Mapping[str, np.ndarray]) -> float:
        """L (module docstring) of the current factors on the event columns."""
        user_side, _, user_reg, item_reg = self.sides(events)
        return float(ials_loss(self.user_factors[...], self.item_factors[...], user_side,
                               user_reg, item_reg, self.settings))

    def user_step(self, events: Mapping[str, np.ndarray]) -> jax.Array:
        """The user vectors one user step on ``events`` gives (items fixed; not stored)."""
        user_side, _, user_reg, _ = self.sides(events)
        dense = _dense_dots(self.num_users, self.num_items, self.settings)
        return _user_step(self.user_factors[...], self.item_factors[...], user_side,
                          user_reg, self.settings, dense)

    def refit_users(self, events: Mapping[str, np.ndarray], users: np.ndarray
                    ) -> dict[str, Any]:
        """Sets the vectors of ``users`` by one user step on their ``events`` (train + val),
        items fixed; every other user keeps their vector (``contract.UserRefit``)."""
        users = np.unique(np.asarray(users))
        keep = np.isin(np.asarray(events["user"]), users)
        mine = {name: np.asarray(events[name])[keep] for name in ("user", "item")}
        solved = self.user_step(mine)
        mask = np.zeros((self.num_users, 1), np.bool_)
        mask[users] = True
        self.user_factors.set_value(jnp.where(jnp.asarray(mask), solved,
                                              self.user_factors[...]))
        return {"users": int(len(users)), "rows": int(keep.sum()),
                "solver": self.settings.solver}


def build(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
          train: Mapping[str, np.ndarray], rngs: nnx.Rngs) -> IALS:
    """iALS for the id spaces, factors drawn from ``rngs`` (``train`` unused: ``fit`` reads
    the data)."""
    del train
    return IALS(num_users, num_items, IALSSettings.from_config(model_config), rngs=rngs)
