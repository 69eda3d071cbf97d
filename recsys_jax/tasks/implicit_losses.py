"""Implicit-feedback losses on positives and negatives sampled inside the train step.

``bce`` (pointwise, the NCF paper's) and ``bpr`` (pairwise, Rendle et al. 2009); both take
``(positives, num_negatives, l2_reg=0.0)`` and are chosen by ``training.loss``
(``IMPLICIT_LOSSES``).

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

BPR's loss is the mean over rows of (1/N) Σ_j −log σ(s⁺ − s⁻_j) (Rendle et al.'s
LearnBPR with N = 1 samples one negative j per positive, uniformly over the user's
non-positives, redrawn every step).

``l2_reg`` = λ > 0 adds the classic per-example L2 of the rows each example reads (a
``contract.RowRegularized`` model's ``row_l2``, e.g. dot-product MF's ‖p_u‖² + ‖q_i‖² + b_u²
+ b_i²): λ times the mean, over the scored (user, item) pairs of the batch (each positive and
its negatives), of ``row_l2``. Only the rows a step reads are penalised, once per pair they
take part in (so a user's row is penalised once for the positive and once per negative), as in
the rating task; unlike ``optimizer.weight_decay``, rows not read are left alone.
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
                                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Logits ``[B]`` of the batch's pairs and ``[B, N]`` of N negatives drawn per row from
    ``rng`` (never a training positive of the row's user), and those negatives."""
    users = batch["user"]
    negatives = jax.lax.stop_gradient(sample_negatives(positives, rng, users, num_negatives))
    return model(users, batch["item"]), model(users[:, None], negatives), negatives


def _check(num_negatives: int, l2_reg: float) -> None:
    if num_negatives <= 0:
        raise ValueError(f"num_negatives must be positive, got {num_negatives}")
    if not l2_reg >= 0:
        raise ValueError(f"l2_reg must be >= 0, got {l2_reg}")


def _with_row_l2(loss: jax.Array, aux: dict[str, jax.Array], model: nnx.Module, batch: Batch,
                 negatives: jax.Array, weight: jax.Array, l2_reg: float
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``loss + λ · mean row_l2`` over the batch's scored pairs (positives and negatives)."""
    if l2_reg == 0:
        return loss, aux
    users = batch["user"]
    per_row = jnp.mean(jnp.concatenate([model.row_l2(users, batch["item"])[:, None],
                                        model.row_l2(users[:, None], negatives)], axis=-1),
                       axis=-1)
    row_l2 = weighted_mean(per_row, weight)
    return loss + l2_reg * row_l2, {**aux, "row_l2": row_l2}


def make_bce_loss(positives: PositiveSet, num_negatives: int = 4,
                  l2_reg: float = 0.0) -> LossFn:
    """``loss_fn(model, batch, rng)`` for a logit model ``model(users, items)``.

    Args:
      positives: the training positives (negatives are never drawn from them).
      num_negatives: N, negatives per positive.
      l2_reg: λ of the per-pair row L2 (module docstring); needs a ``RowRegularized`` model
        when > 0.

    Returns:
      The loss, with aux metrics ``pos_loss`` (mean −log σ(s⁺)), ``neg_loss`` (mean over
      negatives of −log(1 − σ(s⁻))), ``pos_above_neg`` (share of negatives scored below
      their positive) and, with ``l2_reg`` > 0, ``row_l2`` (its mean, before λ).
    """
    _check(num_negatives, l2_reg)

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        weight = batch_weight(batch)
        pos_logit, neg_logit, negatives = _positive_and_negative_logits(
            model, batch, rng, positives, num_negatives)
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
        return _with_row_l2(loss, aux, model, batch, negatives, weight, l2_reg)

    return loss_fn


def make_bpr_loss(positives: PositiveSet, num_negatives: int = 1,
                  l2_reg: float = 0.0) -> LossFn:
    """Bayesian personalised ranking: −log σ(s⁺ − s⁻) for each positive and each of its
    ``num_negatives`` sampled negatives, averaged (weighted by row), plus λ = ``l2_reg`` times
    the mean row L2 of the scored pairs (module docstring; needs a ``RowRegularized`` model
    when > 0).

    Returns:
      ``loss_fn(model, batch, rng) -> (loss, aux)`` for a logit model ``model(users, items)``,
      aux ``pos_above_neg`` (share of pairs ordered right) and, with ``l2_reg`` > 0,
      ``row_l2`` (its mean, before λ).
    """
    _check(num_negatives, l2_reg)

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        weight = batch_weight(batch)
        pos_logit, neg_logit, negatives = _positive_and_negative_logits(
            model, batch, rng, positives, num_negatives)
        margin = pos_logit[:, None] - neg_logit
        per_row = jnp.mean(jax.nn.softplus(-margin), axis=-1)  # −log σ(s⁺ − s⁻)
        aux = {"pos_above_neg": weighted_mean(
            jnp.mean((margin > 0).astype(jnp.float32), axis=-1), weight)}
        return _with_row_l2(weighted_mean(per_row, weight), aux, model, batch, negatives,
                            weight, l2_reg)

    return loss_fn


# Losses of the implicit task by ``training.loss``:
# ``(positives, num_negatives, l2_reg=0.0) -> LossFn``.
IMPLICIT_LOSSES: dict[str, Callable[[PositiveSet, int], LossFn]] = {
    "bce": make_bce_loss,
    "bpr": make_bpr_loss,
}
