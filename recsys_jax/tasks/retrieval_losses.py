"""In-batch softmax for retrieval: each user's positive item against the batch's other items.

For a batch of B (user, item) positives with unit-norm embeddings u_i, v_i and temperature τ,
row i is a (B + M)-way classification of its own item among the candidates
    C = (v_1, …, v_B, n_1, …, n_M)
(the batch's items, plus M uniformly drawn random negatives when mixed negatives are on), with
logits s_ij = u_i·c_j / τ − o_j and loss ℓ_i = logsumexp_j s_ij − s_ii:

* **logQ correction** (Yi et al., RecSys 2019): a popular item appears as an in-batch negative
  far more often than under the full softmax, so o_j = log q_j, the log sampling probability of
  candidate j (its share of the training positives). With mixed negatives (Yang et al., WWW 2020)
  a candidate's expected count in C is B·q_j + M/N, so o_j = log(B·q_j + M/N); without random
  negatives this equals log q_j up to a per-row constant, which the softmax ignores.
* **Accidental hits**: when row i's positive item also sits in column j ≠ i (the same item twice
  in a batch, or drawn as a random negative) that column is a false negative and is masked out.
* Padding rows (weight 0, see ``training.steps``) are neither rows nor candidates.

``in_batch_softmax_loss`` is the pure function; ``make_retrieval_loss`` wraps it into the
``(model, batch, rng) -> (loss, aux)`` signature of the shared training loop. Its ``pair_inputs``
derives per-row user inputs inside the step (``tasks.pair_inputs.causal_pair_inputs``: each
pair's causal inputs from the per-event tables the batch carries) before the model encodes the
batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from recsys_jax.training.losses import Batch, LossFn, batch_weight, weighted_mean

_MASKED = -1e9  # Finite, so a fully masked row cannot produce NaN gradients.


def in_batch_softmax_loss(user_vectors: jax.Array, item_vectors: jax.Array,
                          item_ids: jax.Array, weight: jax.Array, temperature: jax.Array, *,
                          candidate_log_q: jax.Array | None = None,
                          remove_accidental_hits: bool = False,
                          negative_vectors: jax.Array | None = None,
                          negative_ids: jax.Array | None = None) -> jax.Array:
    """Per-row softmax cross-entropy ``[B]`` of each row's positive among the candidates.

    Args:
      user_vectors: ``[B, d]`` user embeddings.
      item_vectors: ``[B, d]`` embeddings of each row's positive item.
      item_ids: ``[B]`` ids of those items.
      weight: ``[B]`` row weights; weight-0 rows are not candidates of other rows.
      temperature: scalar τ > 0.
      candidate_log_q: ``[B + M]`` correction o_j subtracted from each candidate's logit
        (None: no correction).
      remove_accidental_hits: mask candidates whose id equals the row's positive (other than
        the diagonal).
      negative_vectors, negative_ids: ``[M, d]`` and ``[M]`` extra (random) candidates.
    """
    candidates, candidate_ids = item_vectors, item_ids
    is_batch = jnp.ones(item_ids.shape, bool)
    if negative_vectors is not None:
        candidates = jnp.concatenate([item_vectors, negative_vectors], 0)
        candidate_ids = jnp.concatenate([item_ids, negative_ids], 0)
        is_batch = jnp.concatenate([is_batch, jnp.zeros(negative_ids.shape, bool)])
    logits = user_vectors @ candidates.T / temperature               # [B, B + M]
    if candidate_log_q is not None:
        logits = logits - candidate_log_q[None, :]
    b = item_ids.shape[0]
    diagonal = jnp.arange(b)[:, None] == jnp.arange(candidates.shape[0])[None, :]
    valid = jnp.where(is_batch, jnp.pad(weight, (0, candidates.shape[0] - b)) > 0, True)
    keep = valid[None, :] | diagonal
    if remove_accidental_hits:
        hit = (candidate_ids[None, :] == item_ids[:, None]) & ~diagonal
        keep = keep & ~hit
    logits = jnp.where(keep, logits, _MASKED)
    positive = jnp.sum(jnp.where(diagonal, logits, 0.0), axis=1)
    return jax.nn.logsumexp(logits, axis=1) - positive


def sampling_log_q(item_ids: np.ndarray, num_items: int) -> np.ndarray:
    """log q_i: log share of the training positives that are item i (add-one smoothed, so an
    item absent from training still has a finite value when drawn as a random negative)."""
    counts = np.bincount(np.asarray(item_ids, np.int64), minlength=num_items).astype(np.float64)
    return np.log((counts + 1.0) / (counts.sum() + num_items)).astype(np.float32)


def make_retrieval_loss(*, num_items: int, item_log_q: np.ndarray | None = None,
                        remove_accidental_hits: bool = True,
                        num_random_negatives: int = 0,
                        pair_inputs: Callable[[Batch], Mapping[str, jax.Array]] | None = None
                        ) -> LossFn:
    """The two-tower loss on batches with ``user`` and ``item`` id columns (and optionally
    per-row user inputs, which the model's ``encode_batch`` reads).

    Args:
      num_items: catalogue size (random negatives are drawn from ``[0, num_items)``).
      item_log_q: ``[num_items]`` log q_i (``sampling_log_q``) to apply the logQ correction;
        None trains without it.
      remove_accidental_hits: mask false negatives (the row's own item elsewhere in C).
      num_random_negatives: M uniformly drawn extra candidates per batch (0: in-batch only).
      pair_inputs: ``batch -> per-row user inputs`` added to the batch before encoding (e.g.
        ``tasks.pair_inputs.causal_pair_inputs``); None: the batch is encoded as it comes.

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, {"temperature": τ})`` for a
      ``contract.RetrievalEncoder`` (its ``encode_batch`` and ``temperature``).
    """
    if num_random_negatives < 0:
        raise ValueError(f"num_random_negatives must be >= 0, got {num_random_negatives}")
    log_q = None if item_log_q is None else jnp.asarray(item_log_q, jnp.float32)
    if log_q is not None and log_q.shape != (num_items,):
        raise ValueError(f"item_log_q has shape {log_q.shape}, expected ({num_items},)")
    m = int(num_random_negatives)

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        if pair_inputs is not None:
            batch = {**batch, **pair_inputs(batch)}
        weight = batch_weight(batch)
        items = batch["item"]
        negatives = (jax.random.randint(rng, (m,), 0, num_items, dtype=items.dtype)
                     if m else None)
        candidate_ids = items if negatives is None else jnp.concatenate([items, negatives])
        offsets = None
        if log_q is not None:
            offsets = log_q[candidate_ids]
            if m:
                # Expected count of each candidate in C under the mixed sampler.
                offsets = jnp.log(items.shape[0] * jnp.exp(offsets) + m / num_items)
        user_vectors, candidate_vectors = model.encode_batch(batch, candidate_ids)
        per_row = in_batch_softmax_loss(
            user_vectors, candidate_vectors[:items.shape[0]], items, weight,
            model.temperature, candidate_log_q=offsets,
            remove_accidental_hits=remove_accidental_hits,
            negative_vectors=None if negatives is None else candidate_vectors[items.shape[0]:],
            negative_ids=negatives)
        return weighted_mean(per_row, weight), {"temperature": model.temperature}

    return loss_fn
