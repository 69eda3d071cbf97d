"""The model contract: small typed protocols for what a model can do.

Tasks, evaluation, export and serving ask a model for one of these capabilities, never for a
class or an attribute name, so a new model only has to implement the protocols its task needs:

==================  =====================================================  =================
protocol            members                                                asked for by
==================  =====================================================  =================
``PairScorer``      ``num_users``, ``num_items``, ``__call__(users,        rating task (the
                    items)`` -> a score per pair                           score is the
                                                                           predicted rating),
                                                                           implicit task,
                                                                           ranking validators
``RowRegularized``  ``row_l2(users, items)`` -> per-example squared norm   rating loss when
                    of the rows an example uses                            ``training.l2_reg``
                                                                           > 0
``RankingEmbedder`` ``ranking_embeddings()`` -> user and item vectors      ranking evaluation
                    whose dot product ranks items as the model does        and runs (else the
                                                                           model is scored
                                                                           pair by pair)
``ArrayExporter``   ``export_arrays()`` -> named NumPy arrays              exports (``.npy``),
                                                                           item analysis
``SeenMasks``       ``seen_masks()`` -> which user and item ids had        rating task's
                    training data                                          cold-start counts
``RetrievalEncoder`` ``RankingEmbedder`` plus ``temperature``, ``dim``,    retrieval task,
                    ``encode_batch``, ``user_embeddings``,                 ``Retriever``
                    ``encode_users``, ``set_user_inputs``
``SelfFitting``     ``fit(train, config)`` -> facts: trained without the   ``train_and_
                    gradient loop (closed form, alternating solves)        evaluate``
``FoldIn``          ``begin_fold_in(users)``, ``user_side_rows(users)``    rating and implicit
                    -> the user-side parameter rows of ``users``           tasks' test
                                                                           (``tasks.fold_in``)
``UserScores``      ``user_scores(users)`` -> ``[len(users), num_items]``  ranking evaluation
                    scores (models whose scores are neither a dot product  and runs, instead of
                    nor cheap per pair: x_u · B of item-item models)       pair-by-pair scoring
``UserRefit``       ``refit_users(events, users)`` -> facts: the user      implicit task's test
                    side of ``users`` set from their train + val events    (``tasks.fold_in``),
                    without gradients, the item side frozen                before ``FoldIn``
``SequenceEncoder`` ``num_items``, ``max_len``, ``__call__(sequences,      sequential task
                    rngs=None)`` -> hidden states per position,            (loss, validation,
                    ``item_vectors(items)`` -> output embeddings           test, run export)
==================  =====================================================  =================

Every model also has a registry builder (``models.registry``) and is saved and loaded through
the registry (``save_model`` / ``load_model``), which needs nothing from the model beyond its
NNX state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np


@runtime_checkable
class PairScorer(Protocol):
    """Scores (user, item) id pairs: ``model(users, items)``, int arrays of equal shape, gives
    one score per pair of that shape (a predicted rating in the rating task, a logit in the
    implicit task). Ids lie in ``[0, num_users)`` / ``[0, num_items)``; callers validate them
    (JAX clamps out-of-range gathers silently)."""

    num_users: int
    num_items: int

    def __call__(self, users: jax.Array, items: jax.Array) -> jax.Array: ...


@runtime_checkable
class RowRegularized(Protocol):
    """Models whose loss can add the classic per-example L2 of the rows an example uses."""

    def row_l2(self, users: jax.Array, items: jax.Array) -> jax.Array:
        """Per-example squared norm of the parameters the pair uses, shape ``users.shape``."""
        ...


@runtime_checkable
class RankingEmbedder(Protocol):
    """Models that rank items by a dot product of a user vector and an item vector."""

    def ranking_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(users [num_users, d], items [num_items, d])`` float32 NumPy: for each user, the
        items' dot products rank them exactly as the model's own scores do."""
        ...


@runtime_checkable
class ArrayExporter(Protocol):
    """Models with named arrays worth saving as ``<name>.npy`` (embeddings, biases)."""

    def export_arrays(self) -> dict[str, np.ndarray]:
        """Name → NumPy array; an ``item_embeddings`` entry feeds the item analysis."""
        ...


@runtime_checkable
class SeenMasks(Protocol):
    """Models that know which ids had training data (and serve the others by a fallback)."""

    def seen_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user_seen [num_users], item_seen [num_items])`` boolean NumPy."""
        ...


@runtime_checkable
class RetrievalEncoder(RankingEmbedder, Protocol):
    """Encodes users and items into one space for retrieval (towers, or any encoder).

    The retrieval task's loss asks only for ``encode_batch`` and ``temperature``; serving
    (``retrieval.Retriever``) for ``user_embeddings`` and ``encode_users``; the task's test
    evaluation for ``set_user_inputs`` and ``ranking_embeddings``.
    """

    num_users: int
    num_items: int
    dim: int

    @property
    def temperature(self) -> jax.Array:
        """The softmax temperature τ (a positive scalar; learnt or fixed)."""
        ...

    def encode_batch(self, batch: Mapping[str, jax.Array], item_ids: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
        """``(user vectors [B, dim], item vectors [len(item_ids), dim])`` for a training batch
        (``batch["user"]`` ids, plus any per-row user inputs the task's data adds) and the
        candidate items; the model may share work between the two sides."""
        ...

    def user_embeddings(self, user_ids: jax.Array,
                        item_table: jax.Array | None = None) -> jax.Array:
        """Vectors of known users by id, from their stored inputs. ``item_table`` (all item
        vectors, when the caller has them) may save the model work; others ignore it."""
        ...

    def encode_users(self, features: jax.Array, *, history_ids: jax.Array | None = None,
                     history_mask: jax.Array | None = None,
                     item_table: jax.Array | None = None) -> jax.Array:
        """Vectors of new users from standardised feature rows (and item histories, for models
        that pool them)."""
        ...

    def set_user_inputs(self, features: Any) -> None:
        """Replaces the stored per-user inputs (e.g. with train + validation events for
        test-time encoding); shapes stay the same."""
        ...


@runtime_checkable
class SelfFitting(Protocol):
    """Models fitted without the gradient loop (closed form, alternating least squares)."""

    def fit(self, train: Mapping[str, np.ndarray], config: Any) -> Mapping[str, Any]:
        """Fits in place on the task's training columns; returns JSON-able facts (e.g. the
        seconds spent) that the run records."""
        ...


@runtime_checkable
class FoldIn(Protocol):
    """Models whose user side can be refitted with the item side frozen (``tasks.fold_in``)."""

    def begin_fold_in(self, users: np.ndarray) -> None:
        """Makes the user-side rows of ``users`` trainable before a fold-in (e.g. marks users
        unseen in training as seen, starting them from what the model served them with)."""
        ...

    def user_side_rows(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """The parameters fold-in may change, by path in ``nnx.state(model, nnx.Param)``
        (``"/"``-joined, e.g. ``"gmf/user_embedding"``), each with a boolean mask over its
        first axis that is True exactly on the rows of ``users``; every other parameter (and
        every other row) stays bit-identical."""
        ...


@runtime_checkable
class UserScores(Protocol):
    """Models that score a user against the whole catalogue at once (item-item models: the
    user's event row times an item-item matrix), cheaper than scoring pair by pair."""

    def user_scores(self, users: np.ndarray) -> np.ndarray:
        """float32 ``[len(users), num_items]``: each user's score for every item (the model's
        own ranking; excluded items are masked by the evaluation)."""
        ...


@runtime_checkable
class UserRefit(Protocol):
    """Models whose user side is set from a user's events without gradients (stored event
    rows, a closed-form or alternating solve), e.g. for test users from train + val events."""

    def refit_users(self, events: Mapping[str, np.ndarray], users: np.ndarray
                    ) -> Mapping[str, Any]:
        """Sets the user side of ``users`` in place from ``events`` (columns ``user``, ``item``
        and, when the data has them, ``timestamp``: every event of those users the protocol
        allows), with the item side frozen; every other user stays as it was. Returns
        JSON-able facts."""
        ...


@runtime_checkable
class SequenceEncoder(Protocol):
    """Encodes item sequences for next-item prediction (SASRec and kin).

    A sequence is ``max_len`` item ids, oldest first, left-padded with the id ``num_items``
    (so the last position holds the most recent item). The score of item i as the next item
    after position t is ``h_t · item_vectors(i)``; a user is ranked from the hidden state at
    the last position of their sequence, so ``(h_last per user, item_vectors(all items))`` are
    the user's ranking embeddings.
    """

    num_items: int
    max_len: int

    def __call__(self, sequences: jax.Array, *, rngs: Any = None) -> jax.Array:
        """Hidden states ``[B, max_len, d]`` of ``[B, max_len]`` sequences; h_t depends on the
        items at positions ≤ t only. ``rngs`` (``nnx.Rngs`` with a ``dropout`` stream) turns
        training-time randomness on; ``None`` is deterministic."""
        ...

    def item_vectors(self, items: jax.Array) -> jax.Array:
        """Output embeddings ``items.shape + (d,)`` of item ids in ``[0, num_items)``."""
        ...


def missing_members(model: Any, protocol: type) -> list[str]:
    """Names ``protocol`` declares that ``model`` lacks (for clear error messages)."""
    names = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object) or not getattr(klass, "_is_protocol", False):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {n for n, v in vars(klass).items()
                  if not n.startswith("_") and (callable(v) or isinstance(v, property))}
        if "__call__" in vars(klass):
            names.add("__call__")
    return sorted(n for n in names if not hasattr(model, n))


def require(model: Any, protocol: type, purpose: str) -> None:
    """Raises ``TypeError`` naming the missing members when ``model`` lacks ``protocol``."""
    missing = missing_members(model, protocol)
    if missing:
        raise TypeError(f"{type(model).__name__} cannot be used for {purpose}: it does not "
                        f"implement {protocol.__name__} (missing {', '.join(missing)}); "
                        "see recsys_jax.models.contract")
