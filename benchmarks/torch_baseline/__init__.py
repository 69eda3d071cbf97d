"""The PyTorch baseline of recsys_jax: the same models written the way a PyTorch user writes
them, for the side-by-side benchmark (``python -m benchmarks.torch_vs_jax``) only.

Kept apart from ``recsys_jax`` (which never imports torch); needs the ``baseline`` extra and
runs from the repository root (not installed). Modules:
  torch_mf      ``TorchMF`` (nn.Embedding tables, biases, μ), weights to/from NumPy
  mf_training   the ``DataLoader`` baseline, the tuned loop and the sparse loop (``SparseAdam``,
                the counterpart of ``optimizer.tables=lazy_adam``), early stopping, ``FitRecord``
  jax_mf        the JAX side: the library's ``train_rating_model`` → ``loop.fit`` (the one
                import of the rating task in ``benchmarks/``)
  mf_benchmark  MF orchestration, scoring with recsys_jax.evaluation, Markdown
  torch_two_tower ``TorchTwoTower`` (same towers, loads JAX weights) and the in-batch softmax
                loss
  two_tower_training  the ``DataLoader`` baseline and the tuned loop, fixed epochs, export
  jax_two_tower       the JAX side: the library's ``train_two_tower`` → ``loop.fit`` (the one
                      import of the retrieval task in ``benchmarks/``)
  two_tower_benchmark orchestration and scoring of the two-tower runs (HR@100 / NDCG@100,
                      time to the best validation epoch)
  two_tower_profile   one training step timed piece by piece in both frameworks
  optimizer_floor     MF's dense optimizer update alone, per epoch, in both frameworks
  runs          which runs ``torch_vs_jax`` makes (a config, or a scale workload on a shape)
                and the variants of each
  worker        one measurement in a fresh process with fixed thread settings
Timing, environment, worker launch and output are ``benchmarks.harness``'s.
Importing the package loads neither framework.
"""
