"""Next-item losses of the sequential task: a prediction at every position of every row.

A batch holds rows of ``max_len + 1`` items (``sequence``, left-padded with the padding id
``num_items``) and their ``user``: the model encodes ``sequence[:, :-1]`` into hidden states
h_t and position t is trained to score the next item ``sequence[:, t + 1]``; positions whose
input is padding are left out (so a row's first item is never a target: nothing precedes it),
and so are the padding rows of an epoch's last batch (weight 0).
With ``T`` the set of kept positions:

* ``bce`` (the SASRec paper's): one negative j_t per position, drawn uniformly from the items
  the row's user has no training event with (``negatives.sample_negatives``), resampled every
  step from the step's rng,
      ℓ = (1/|T|) Σ_{t∈T} [−log σ(h_t·e_{i_t}) − log(1 − σ(h_t·e_{j_t}))];
* ``softmax``: the in-batch softmax of the retrieval task (``retrieval_losses``) over the
  batch's positions: each kept position is a row whose candidates are the targets of all kept
  positions of the batch (plus ``num_random_negatives`` uniform items), with the logQ correction
  (q_i: item i's share of the training targets) and accidental-hit removal (a candidate equal to
  the position's own target is masked); τ = 1, the scores are plain dot products. The batch
  holds ``batch_size · max_len`` positions, so the logits are a square of that side: keep it at
  a few thousand.

Dropout draws from the step's rng too, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.tasks.negatives import PositiveSet, sample_negatives
from recsys_jax.tasks.retrieval_losses import in_batch_softmax_loss, sampled_candidates
from recsys_jax.training.losses import Batch, LossFn, batch_weight

SEQUENCE_LOSSES = ("bce", "softmax")


def _encode(model: nnx.Module, batch: Batch, rng: jax.Array
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(hidden [B, L, d], targets [B, L], kept [B, L] float)`` of a batch, dropout on.

    A position is kept when its input holds an item: rows are left-padded, so its target holds
    one too, while the first item of a row (after padding) is an input only."""
    rows = batch["sequence"]
    inputs, targets = rows[:, :-1], rows[:, 1:]
    hidden = model(inputs, rngs=nnx.Rngs(dropout=rng))
    kept = (inputs != model.num_items).astype(jnp.float32) * batch_weight(batch)[:, None]
    return hidden, targets, kept


def _mean_over(values: jax.Array, kept: jax.Array) -> jax.Array:
    return jnp.sum(values * kept) / jnp.maximum(jnp.sum(kept), 1e-12)


def make_sequence_bce_loss(positives: PositiveSet) -> LossFn:
    """The SASRec paper's loss; see the module docstring.

    Args:
      positives: each user's training items (negatives are never drawn from them).

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, aux)`` for a ``contract.SequenceEncoder``, aux
      ``pos_loss`` (mean −log σ(s⁺)), ``neg_loss`` (mean −log(1 − σ(s⁻))), ``pos_above_neg``
      (share of positions scoring their target above their negative) and ``targets`` (kept
      positions per row).
    """
    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        dropout_key, negative_key = jax.random.split(rng)
        hidden, targets, kept = _encode(model, batch, dropout_key)
        users = jnp.broadcast_to(batch["user"][:, None], targets.shape)
        negatives = jax.lax.stop_gradient(
            sample_negatives(positives, negative_key, users, 1))[..., 0]
        pos_logit = jnp.sum(hidden * model.item_vectors(targets), axis=-1)
        neg_logit = jnp.sum(hidden * model.item_vectors(negatives), axis=-1)
        pos_loss = jax.nn.softplus(-pos_logit)   # −log σ(s)
        neg_loss = jax.nn.softplus(neg_logit)    # −log(1 − σ(s))
        aux = {"pos_loss": _mean_over(pos_loss, kept), "neg_loss": _mean_over(neg_loss, kept),
               "pos_above_neg": _mean_over((pos_logit > neg_logit).astype(jnp.float32), kept),
               "targets": jnp.sum(kept) / jnp.maximum(jnp.sum(batch_weight(batch)), 1e-12)}
        return _mean_over(pos_loss + neg_loss, kept), aux

    return loss_fn


def make_sequence_softmax_loss(*, num_items: int, target_log_q: np.ndarray | None = None,
                               remove_accidental_hits: bool = True,
                               num_random_negatives: int = 0) -> LossFn:
    """In-batch softmax over the batch's positions; see the module docstring.

    Args:
      num_items: the catalogue (random negatives are drawn from it; padding is ``num_items``).
      target_log_q: ``[num_items]`` log q_i (``retrieval_losses.sampling_log_q`` of the
        training targets) to apply the logQ correction; None trains without it.
      remove_accidental_hits: mask a position's own target where it recurs among the
        candidates.
      num_random_negatives: M uniform extra candidates per batch (0: in-batch only).

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, {"targets": kept positions per row})`` for a
      ``contract.SequenceEncoder``.
    """
    if num_random_negatives < 0:
        raise ValueError(f"num_random_negatives must be >= 0, got {num_random_negatives}")
    log_q = None
    if target_log_q is not None:
        if np.shape(target_log_q) != (num_items,):
            raise ValueError(f"target_log_q has shape {np.shape(target_log_q)}, expected "
                             f"({num_items},)")
        # One entry for the padding id, so padded targets gather a finite value (never used).
        log_q = jnp.asarray(np.append(target_log_q, 0.0), jnp.float32)
    m = int(num_random_negatives)

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        dropout_key, negative_key = jax.random.split(rng)
        hidden, targets, kept = _encode(model, batch, dropout_key)
        d = hidden.shape[-1]
        rows, items, weight = hidden.reshape(-1, d), targets.reshape(-1), kept.reshape(-1)
        # Expected counts: the kept targets plus M uniform draws.
        candidate_ids, negatives, offsets = sampled_candidates(
            items, negative_key, num_items=num_items, num_random_negatives=m, log_q=log_q,
            num_targets=jnp.sum(weight))
        vectors = model.item_vectors(candidate_ids)
        n = items.shape[0]
        per_row = in_batch_softmax_loss(
            rows, vectors[:n], items, weight, jnp.float32(1.0), candidate_log_q=offsets,
            remove_accidental_hits=remove_accidental_hits,
            negative_vectors=None if negatives is None else vectors[n:],
            negative_ids=negatives)
        aux = {"targets": jnp.sum(kept) / jnp.maximum(jnp.sum(batch_weight(batch)), 1e-12)}
        return _mean_over(per_row, weight), aux

    return loss_fn

