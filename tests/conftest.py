"""Shared test settings: fast XLA compiles, patient hypothesis on a shared 2-core machine."""

import jax
from hypothesis import HealthCheck, settings

# Tests use tiny arrays, so compile time dominates: skip most XLA optimisation passes.
jax.config.update("jax_disable_most_optimizations", True)

settings.register_profile(
    "recsys", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("recsys")
