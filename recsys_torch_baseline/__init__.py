"""The PyTorch baseline of recsys_jax: the same models written the way a PyTorch user writes
them, for the side-by-side benchmark (``experiments/benchmark_torch.py``) only.

Kept apart from ``recsys_jax`` (which never imports torch); installed with the ``baseline``
extra. Modules:
  mf            ``TorchMF`` (nn.Embedding tables, biases, μ), weights to/from NumPy
  mf_training   the ``DataLoader`` baseline and the tuned loop, early stopping, ``FitRecord``
  jax_mf        recsys_jax's MF trained under the same protocol (the JAX side)
  two_tower     ``TorchTwoTower`` (same towers, loads JAX weights) and the in-batch softmax
                loss
  two_tower_training  the ``DataLoader`` baseline and the tuned loop, fixed epochs, export
  jax_two_tower       recsys_jax's two-tower trained for the same fixed epochs (the JAX side)
  two_tower_benchmark orchestration and scoring of the two-tower runs (HR@100 / NDCG@100,
                      time to the best validation epoch)
  two_tower_profile   one training step timed piece by piece in both frameworks
  mf_optimizer_floor  MF's dense optimizer update alone, per epoch, in both frameworks
  worker        one measurement in a fresh process with fixed thread settings
  benchmark     orchestration, scoring with recsys_jax.evaluation, Markdown/JSON
Importing the package loads neither framework.
"""
