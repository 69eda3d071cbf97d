"""Models by name: a config's ``model.name`` picks the builder.

A builder has the signature ``build(model_config, *, num_users, num_items, train, rngs)`` and
returns an ``nnx.Module``; ``train`` holds the validated training columns (``user``, ``item``,
``rating``) so a builder can size tables and initialise from data. To add a model, write one
module with its builder and add one line to ``MODELS``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from flax import nnx

from recsys_jax.models import mf, ncf, two_tower

ModelBuilder = Callable[..., nnx.Module]

MODELS: dict[str, ModelBuilder] = {
    "mf": mf.build_mf,
    "two_tower": two_tower.build_two_tower,
    "gmf": ncf.build_gmf,
    "mlp": ncf.build_mlp,
    "neumf": ncf.build_neumf,
    "dot_mf": ncf.build_dot_mf,
}


def build_model(model_config: Mapping[str, Any], *, num_users: int, num_items: int,
                train: Mapping[str, np.ndarray], rngs: nnx.Rngs, **inputs: Any) -> nnx.Module:
    """Builds the model named by ``model_config["name"]``.

    ``inputs`` go to the builder unchanged, for models that need more than ids (the two-tower
    model takes ``features=``).

    Raises:
      ValueError: for a name that is not registered (the message lists the known names).
    """
    name = model_config["name"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](model_config, num_users=num_users, num_items=num_items,
                        train=train, rngs=rngs, **inputs)
