"""recsys_jax: JAX/Flax recommender-systems research code.

Importing the package has no side effects: no downloads, no device work, no torch.
"""

__version__ = "0.1.0"
