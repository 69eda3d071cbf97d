r"""JAX against PyTorch (a plain DataLoader baseline, a tuned variant, and for MF with lazy-Adam
tables a SparseAdam variant), side by side.

Usage:
  python -m benchmarks.torch_vs_jax --models=mf --config=configs/mf_ml100k.py \
      --repetitions=3 --output_dir=workdirs/benchmark_torch
  python -m benchmarks.torch_vs_jax --models=two_tower \
      --config=configs/two_tower_ml100k.py --epochs=20 --repetitions=3 \
      --output_dir=workdirs/benchmark_torch
  # At the scale benchmark's shapes (benchmarks.scale_shapes), its workloads as models:
  python -m benchmarks.torch_vs_jax --shape=ml20m --models=mf_lazy_adam,mf,two_tower \
      --max_epoch_steps=2000 --repetitions=1 --output_dir=workdirs/torch_vs_jax_ml20m

Same data, split, initialisation, hyperparameters, early-stopping rule (MF) or fixed number of
epochs (two-tower: every variant trains exactly ``--epochs``, default ``training.epochs``) and
evaluation code for every framework; the JAX side is the library's own training loop
(``train_rating_model`` / ``train_two_tower`` → ``loop.fit``, no workdir); each run trains in a
fresh worker process with the same CPU thread settings. ``--config`` is the config of the
model named by ``--models`` (one model per invocation when the configs differ).

MF variants follow the config's ``optimizer.tables``: dense tables are compared with the
PyTorch ``baseline`` and ``tuned`` loops, ``lazy_adam`` with ``sparse`` (``SparseAdam`` on
``nn.Embedding(sparse=True)``); ``--variants`` (default: all) keeps those of each model that
it names.

``--shape`` (a key of ``benchmarks.scale_shapes.SHAPES``: ``tiny``, ``ml20m_20th``, ``ml20m``,
``1m_items``) replaces ``--config``: ``--models`` then names scale workloads with a PyTorch
side (``mf``, ``mf_lazy_adam``, ``two_tower``), each configured exactly as ``benchmarks.scale``
configures it (the workload's config and overrides, the shape's synthetic data, split and batch
size, no early stopping), for ``--epochs`` epochs (default 2: epoch 1 warms up, the steady epoch
is the median of the others). ``--max_epoch_steps`` caps an epoch: every framework trains on the
same seeded random subset of ``max_epoch_steps × batch`` training rows (validation and test
whole); unset, it is the workload's default of the scale benchmark (2,000 steps for the dense
``mf``, full epochs otherwise), 0 means full epochs. At a shape the PyTorch two-tower runs are
not scored epoch by epoch (each would be a full ranking of every validation user): they are
tested at their last epoch and report no time to the best epoch.

``--device=cuda`` trains the PyTorch variants on the GPU (model and training tensors on the
device; the baseline's ``DataLoader`` stays on the host and moves each batch); the default is
the CPU. JAX runs on its default backend either way.

Prints a Markdown table and writes ``benchmark_<model>.md`` and ``benchmark_<model>.json``
(with ``--shape``: ``benchmark_<shape>_<workload>.*``) to ``--output_dir``. Needs the
``baseline`` extra (torch). Smoke test:
  python -m benchmarks.torch_vs_jax --config=configs/mf_tiny.py --repetitions=1 \
      --torch_compile=false --output_dir=/tmp/bench_torch
  python -m benchmarks.torch_vs_jax --models=two_tower --config=configs/two_tower_tiny.py \
      --repetitions=1 --output_dir=/tmp/bench_torch
  python -m benchmarks.torch_vs_jax --shape=tiny --models=mf_lazy_adam,two_tower \
      --repetitions=1 --output_dir=/tmp/bench_torch
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import harness, scale_shapes
from benchmarks.torch_baseline import mf_benchmark, two_tower_benchmark
from benchmarks.torch_baseline.runs import (
    MODELS,
    SHAPE_EPOCHS,
    SHAPE_WORKLOADS,
    plan_runs,
    run_variants,
)
from recsys_jax.console import quiet_startup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mf_ml100k.py",
                                          "Experiment config of the benchmarked model.",
                                          lock_config=True)
_MODELS = flags.DEFINE_list("models", ["mf"], f"Models to benchmark: {', '.join(MODELS)}; with "
                            f"--shape, scale workloads: {', '.join(SHAPE_WORKLOADS)}.")
_SHAPE = flags.DEFINE_enum("shape", None, list(scale_shapes.SHAPES),
                           "A data shape of the scale benchmark (synthetic data); replaces "
                           "--config, and --models names scale workloads.")
_VARIANTS = flags.DEFINE_list("variants", None,
                              f"Variants to run (default: every variant of each model, from "
                              f"{list(mf_benchmark.MF_VARIANTS)}); jax is always needed (the "
                              "reference).")
_REPETITIONS = flags.DEFINE_integer("repetitions", 3, "Training runs per variant (medians).",
                                    lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Most epochs per run (default: the config's; "
                               f"with --shape {SHAPE_EPOCHS}; MF: early stopping still applies "
                               "without --shape; two_tower: exactly this many, no early "
                               "stopping).", lower_bound=1)
_MAX_EPOCH_STEPS = flags.DEFINE_integer(
    "max_epoch_steps", None, "Steps per epoch at most (every framework trains on the same "
    "random subset of max_epoch_steps × batch training rows); 0: full epochs. Default: full "
    "epochs; with --shape the scale benchmark's default of the workload.", lower_bound=0)
_THREADS = flags.DEFINE_integer("threads", None, "CPU threads for every framework (default: "
                                "all CPUs this process may use).", lower_bound=1)
_TORCH_COMPILE = flags.DEFINE_boolean(
    "torch_compile", None, "torch.compile the model in the tuned variant (default: on for mf, "
    "off for two_tower, where compiling on CPU outlasts a whole ML-100K run).")
_RESAMPLES = flags.DEFINE_integer("bootstrap_resamples", 2000, "Bootstrap resamples for CIs.",
                                  lower_bound=100)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write Markdown and JSON.")
_DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"],
                            "Where the PyTorch variants train (JAX uses its default backend: "
                            "a GPU when jax[cuda] is installed).")


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _SHAPE.value and flags.FLAGS["config"].present:
        raise app.UsageError("--shape sets the configs (the scale workloads'); drop --config")
    try:
        runs = plan_runs(_MODELS.value, config=_CONFIG.value, shape=_SHAPE.value,
                         epochs=_EPOCHS.value, max_epoch_steps=_MAX_EPOCH_STEPS.value)
        variants = {run.name: run_variants(run, _VARIANTS.value) for run in runs}
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    command = "python -m benchmarks.torch_vs_jax " + " ".join(map(shlex.quote, sys.argv[1:]))
    for run in runs:
        if run.model == "mf":
            result = mf_benchmark.run_mf_benchmark(
                run.config, variants=variants[run.name], repetitions=_REPETITIONS.value,
                max_epochs=run.epochs, max_epoch_steps=run.max_epoch_steps,
                threads=_THREADS.value, torch_compile=_TORCH_COMPILE.value is not False,
                bootstrap_resamples=_RESAMPLES.value, torch_device=_DEVICE.value,
                log=logging.info)
            markdown = (mf_benchmark.format_mf_markdown(result) + "\n"
                        + result["comparison_markdown"])
        else:
            result = two_tower_benchmark.run_two_tower_benchmark(
                run.config, variants=variants[run.name], repetitions=_REPETITIONS.value,
                epochs=run.epochs, max_epoch_steps=run.max_epoch_steps,
                threads=_THREADS.value, torch_compile=bool(_TORCH_COMPILE.value),
                bootstrap_resamples=_RESAMPLES.value, torch_device=_DEVICE.value,
                epoch_embeddings=run.shape is None, log=logging.info)
            markdown = two_tower_benchmark.format_two_tower_markdown(result)
        result["command"] = command
        if run.shape is not None:
            result.update(shape=run.shape, workload=run.workload)
            markdown = (f"Shape `{run.shape}`, workload `{run.workload}` of the scale "
                        f"benchmark: `{command}`\n\n{markdown}")
        print(markdown)
        if _OUTPUT_DIR.value:
            harness.write_results(_OUTPUT_DIR.value, f"benchmark_{run.name}", result, markdown)
            logging.info("wrote %s", _OUTPUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
