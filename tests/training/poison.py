"""A loss that turns NaN in chosen optimizer steps, to make training diverge on cue."""

from collections.abc import Iterable

import jax
import jax.numpy as jnp

from recsys_jax.training.losses import LossFn
from recsys_jax.training.steps import step_key


def poisoned_in_steps(loss_fn: LossFn, seed: int, steps: Iterable[int]) -> LossFn:
    """``loss_fn`` times NaN in the optimizer ``steps`` of a run seeded by ``seed``, else
    times 1 (so the gradients, and with them the parameters, turn NaN too).

    The loop hands the loss ``step_key(jax.random.key(seed), step)``; the step is recognised
    by that key, so the poison needs no state and survives a resume.
    """
    key = jax.random.key(seed)
    table = jnp.stack([jax.random.key_data(step_key(key, s)) for s in steps])

    def poisoned(model, batch, rng):
        loss, aux = loss_fn(model, batch, rng)
        hit = jnp.any(jnp.all(jax.random.key_data(rng) == table, axis=-1))
        return loss * jnp.where(hit, jnp.nan, 1.0), aux
    return poisoned
