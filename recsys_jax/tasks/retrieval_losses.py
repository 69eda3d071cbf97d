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
    # A candidate is dropped from every row but its own when it is a padding row of the batch,
    # and (accidental hits) from the rows whose positive it equals. Encoded per column so the
    # [B, B + M] mask is recomputed inside the fused elementwise passes, never stored.
    padding = is_batch & (jnp.pad(weight, (0, candidates.shape[0] - item_ids.shape[0])) <= 0)
    # Ids below 0 never equal a row's item id (ids are >= 0): with hit removal off, no column
    # matches.
    match_ids = candidate_ids if remove_accidental_hits else jnp.full_like(candidate_ids, -1)
    offsets = (jnp.zeros(candidates.shape[:1], user_vectors.dtype) if candidate_log_q is None
               else candidate_log_q)
    return _softmax_cross_entropy(user_vectors, candidates, temperature, offsets, item_ids,
                                  match_ids, padding)


def _masked_logits(user_vectors, candidates, temperature, offsets, row_ids, match_ids, padding):
    """s_ij = u_i·c_j / τ − o_j, with dropped candidates at ``_MASKED``; and the diagonal."""
    b, n = user_vectors.shape[0], candidates.shape[0]
    logits = user_vectors @ candidates.T / temperature - offsets[None, :]
    diagonal = jnp.arange(b)[:, None] == jnp.arange(n)[None, :]
    drop = (padding[None, :] | (match_ids[None, :] == row_ids[:, None])) & ~diagonal
    return jnp.where(drop, _MASKED, logits), diagonal


def _softmax_cross_entropy_fwd(user_vectors, candidates, temperature, offsets, row_ids,
                               match_ids, padding):
    logits, diagonal = _masked_logits(user_vectors, candidates, temperature, offsets, row_ids,
                                      match_ids, padding)
    top = jnp.max(logits, axis=1, keepdims=True)
    exp = jnp.exp(logits - top)
    total = jnp.sum(exp, axis=1, keepdims=True)
    positive = jnp.sum(jnp.where(diagonal, logits, 0.0), axis=1)
    loss = (top[:, 0] + jnp.log(total[:, 0])) - positive
    # The softmax is kept for the backward pass: autodiff would keep as many [B, B + M] arrays
    # and recompute masks and selects in several more passes (measured 10-15% of the loss).
    return loss, (user_vectors, candidates, temperature, exp / total)


def _softmax_cross_entropy_bwd(residuals, g):
    user_vectors, candidates, temperature, softmax = residuals
    b, n = softmax.shape
    diagonal = jnp.arange(b)[:, None] == jnp.arange(n)[None, :]
    # dℓ_i/ds_ij = p_ij − [j = i]; a dropped s_ij is a constant (p_ij = 0 exactly).
    d_logits = g[:, None] * (softmax - diagonal.astype(softmax.dtype))
    d_scaled = d_logits / temperature
    d_users = d_scaled @ candidates
    # XLA's CPU backend runs a dot contracting the left operand's rows (d_scaled.T @ u) through
    # a generic GEMM about 2× slower than the fused one; transposing first (a 16 MB copy at
    # B = 2048, kept apart by the barrier so it is not folded back into the dot) is cheaper.
    d_candidates = jax.lax.optimization_barrier(d_scaled.T) @ user_vectors
    # ∂s_ij/∂τ = −u_i·c_j / τ², so dτ = −Σ_i u_i·(d u_i) / τ.
    d_temperature = -jnp.sum(d_users * user_vectors) / temperature
    d_offsets = -jnp.sum(d_logits, axis=0)
    return d_users, d_candidates, d_temperature, d_offsets, None, None, None


@jax.custom_vjp
def _softmax_cross_entropy(user_vectors, candidates, temperature, offsets, row_ids, match_ids,
                           padding):
    """ℓ_i = logsumexp_j s_ij − s_ii over the kept candidates (``_masked_logits``), with a
    hand-written gradient (equal to autodiff's, tested)."""
    return _softmax_cross_entropy_fwd(user_vectors, candidates, temperature, offsets, row_ids,
                                      match_ids, padding)[0]


_softmax_cross_entropy.defvjp(_softmax_cross_entropy_fwd, _softmax_cross_entropy_bwd)


def sampling_log_q(item_ids: np.ndarray, num_items: int) -> np.ndarray:
    """log q_i: log share of the training positives that are item i (add-one smoothed, so an
    item absent from training still has a finite value when drawn as a random negative)."""
    counts = np.bincount(np.asarray(item_ids, np.int64), minlength=num_items).astype(np.float64)
    return np.log((counts + 1.0) / (counts.sum() + num_items)).astype(np.float32)


def sampled_candidates(items: jax.Array, rng: jax.Array, *, num_items: int,
                       num_random_negatives: int, log_q: jax.Array | None,
                       num_targets: jax.Array | int
                       ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """The candidates of an in-batch softmax: the batch's target ``items`` followed by
    ``num_random_negatives`` uniform draws from ``[0, num_items)``, and each candidate's logQ
    offset (None without ``log_q``).

    With random negatives the offset is the log of the candidate's expected count under the
    mixed sampler: ``num_targets`` draws from q plus M uniform ones.

    Returns:
      ``(candidate_ids, negatives or None, offsets or None)``.
    """
    m = int(num_random_negatives)
    negatives = (jax.random.randint(rng, (m,), 0, num_items, dtype=items.dtype) if m else None)
    candidate_ids = items if negatives is None else jnp.concatenate([items, negatives])
    offsets = None
    if log_q is not None:
        offsets = log_q[candidate_ids]
        if m:
            offsets = jnp.log(num_targets * jnp.exp(offsets) + m / num_items)
    return candidate_ids, negatives, offsets


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
        candidate_ids, negatives, offsets = sampled_candidates(
            items, rng, num_items=num_items, num_random_negatives=m, log_q=log_q,
            num_targets=items.shape[0])
        user_vectors, candidate_vectors = model.encode_batch(batch, candidate_ids)
        per_row = in_batch_softmax_loss(
            user_vectors, candidate_vectors[:items.shape[0]], items, weight,
            model.temperature, candidate_log_q=offsets,
            remove_accidental_hits=remove_accidental_hits,
            negative_vectors=None if negatives is None else candidate_vectors[items.shape[0]:],
            negative_ids=negatives)
        return weighted_mean(per_row, weight), {"temperature": model.temperature}

    return loss_fn
