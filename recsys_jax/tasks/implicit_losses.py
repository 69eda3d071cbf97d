"""Implicit-feedback losses on positives and negatives sampled inside the train step.

``bce`` (pointwise, the NCF paper's) and ``bpr`` (pairwise, Rendle et al. 2009); both take
``(positives, num_negatives)`` and are chosen by ``training.loss`` (``IMPLICIT_LOSSES``).

A batch holds ``batch_size`` positive (user, item) rows; the loss draws ``num_negatives``
items per row from the step's rng (``negatives.sample_negatives``), so with the shared loop
(``loop.fit``, which hands step s the key ``fold_in(fold_in(seed_key, 1), s)``) negatives are
redrawn every epoch, on the device, reproducibly and exactly as they were after a resume. One
step therefore trains on ``batch_size · (1 + num_negatives)`` examples: the NCF paper's
batch of 256 examples with 4 negatives is ``batch_size`` ≈ 51 here.

The loss is the mean log loss over all examples,
    ℓ = −(1 / (B(1+N))) Σ_rows w [log σ(s⁺) + Σ_{j≤N} log(1 − σ(s⁻_j))],
with w the row weight (0 for the padding of an epoch's last batch; a positive's negatives
share its weight). The NCF paper minimises the same sum, un-normalised.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from recsys_jax.tasks.negatives import PositiveSet, sample_negatives
from recsys_jax.training.losses import Batch, LossFn, batch_weight, weighted_mean


def _positive_and_negative_logits(model: nnx.Module, batch: Batch, rng: jax.Array,
                                  positives: PositiveSet, num_negatives: int
                                  ) -> tuple[jax.Array, jax.Array]:
    """Logits ``[B]`` of the batch's pairs and ``[B, N]`` of N negatives drawn per row from
    ``rng`` (never a training positive of the row's user)."""
    users = batch["user"]
    negatives = jax.lax.stop_gradient(sample_negatives(positives, rng, users, num_negatives))
    return model(users, batch["item"]), model(users[:, None], negatives)


def make_bce_loss(positives: PositiveSet, num_negatives: int = 4) -> LossFn:
    """``loss_fn(model, batch, rng)`` for a logit model ``model(users, items)``.

    Args:
      positives: the training positives (negatives are never drawn from them).
      num_negatives: N, negatives per positive.

    Returns:
      The loss, with aux metrics ``pos_loss`` (mean −log σ(s⁺)), ``neg_loss`` (mean over
      negatives of −log(1 − σ(s⁻))) and ``pos_above_neg`` (share of negatives scored below
      their positive).
    """
    if num_negatives <= 0:
        raise ValueError(f"num_negatives must be positive, got {num_negatives}")

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        weight = batch_weight(batch)
        pos_logit, neg_logit = _positive_and_negative_logits(model, batch, rng, positives,
                                                             num_negatives)
        pos_loss = jax.nn.softplus(-pos_logit)           # −log σ(s)
        neg_loss = jnp.sum(jax.nn.softplus(neg_logit), axis=-1)  # −Σ log(1 − σ(s))
        loss = jnp.sum(weight * (pos_loss + neg_loss)) / jnp.maximum(
            jnp.sum(weight) * (1 + num_negatives), 1e-12)
        aux = {
            "pos_loss": weighted_mean(pos_loss, weight),
            "neg_loss": weighted_mean(neg_loss / num_negatives, weight),
            "pos_above_neg": weighted_mean(
                jnp.mean((pos_logit[:, None] > neg_logit).astype(jnp.float32), axis=-1),
                weight),
        }
        return loss, aux

    return loss_fn


def make_bpr_loss(positives: PositiveSet, num_negatives: int = 1) -> LossFn:
    """Bayesian personalised ranking: −log σ(s⁺ − s⁻) for each positive and each of its
    ``num_negatives`` sampled negatives, averaged (weighted by row).

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, {"pos_above_neg": share of pairs ordered
      right})`` for a logit model ``model(users, items)``.
    """
    if num_negatives <= 0:
        raise ValueError(f"num_negatives must be positive, got {num_negatives}")

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        weight = batch_weight(batch)
        pos_logit, neg_logit = _positive_and_negative_logits(model, batch, rng, positives,
                                                             num_negatives)
        margin = pos_logit[:, None] - neg_logit
        per_row = jnp.mean(jax.nn.softplus(-margin), axis=-1)  # −log σ(s⁺ − s⁻)
        aux = {"pos_above_neg": weighted_mean(
            jnp.mean((margin > 0).astype(jnp.float32), axis=-1), weight)}
        return weighted_mean(per_row, weight), aux

    return loss_fn


# Losses of the implicit task by ``training.loss``: ``(positives, num_negatives) -> LossFn``.
IMPLICIT_LOSSES: dict[str, Callable[[PositiveSet, int], LossFn]] = {
    "bce": make_bce_loss,
    "bpr": make_bpr_loss,
}
