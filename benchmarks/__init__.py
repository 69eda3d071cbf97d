"""Benchmarks of recsys_jax, run from the repository root: ``python -m benchmarks.<name>``.

Not installed with the package. Scripts (absl flags; ``--help`` lists them):
  torch_vs_jax        JAX (the library's ``loop.fit``) against the PyTorch baseline and a tuned
                      PyTorch loop, MF and two-tower, each run in a fresh worker process
  mf_epoch            MF steady-state epoch: the scanned epoch against a jitted-step loop
  eval_throughput     full-ranking evaluation throughput on synthetic embeddings
  retrieval_indexes   FAISS index sweep: build time, size, recall, retrieve() latency
  epoch_order_cost    the epoch's row permutation: XLA's sort against ``steps.epoch_order``
  mf_optimizer_floor  MF's dense optimizer update alone, per epoch, JAX and PyTorch
  profile_two_tower   one two-tower training step timed piece by piece in both frameworks
Modules:
  harness             timing, environment facts (CPU model), worker launch, JSON/Markdown
  jax_epochs          JAX epoch timing (scanned epoch vs step loop) for ``mf_epoch``
  eval_problem        the synthetic full-ranking problem of ``eval_throughput``
  torch_baseline/     the PyTorch baseline (needs the ``baseline`` extra: torch)
"""
