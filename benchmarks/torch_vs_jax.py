r"""JAX against PyTorch (a plain DataLoader baseline and a tuned variant), side by side.

Usage:
  python -m benchmarks.torch_vs_jax --models=mf --config=configs/mf_ml100k.py \
      --repetitions=3 --output_dir=workdirs/benchmark_torch
  python -m benchmarks.torch_vs_jax --models=two_tower \
      --config=configs/two_tower_ml100k.py --epochs=20 --repetitions=3 \
      --output_dir=workdirs/benchmark_torch

Same data, split, initialisation, hyperparameters, early-stopping rule (MF) or fixed number of
epochs (two-tower: every variant trains exactly ``--epochs``, default ``training.epochs``) and
evaluation code for every framework; the JAX side is the library's own training loop
(``train_rating_model`` / ``train_two_tower`` → ``loop.fit``, no workdir); each run trains in a
fresh worker process with the same CPU thread settings. ``--config`` is the config of the
model named by ``--models`` (one model per invocation when the configs differ).
Prints a Markdown table and writes ``benchmark_<model>.md`` and ``benchmark_<model>.json`` to
``--output_dir``. Needs the ``baseline`` extra (torch). Smoke test:
  python -m benchmarks.torch_vs_jax --config=configs/mf_tiny.py --repetitions=1 \
      --torch_compile=false --output_dir=/tmp/bench_torch
  python -m benchmarks.torch_vs_jax --models=two_tower --config=configs/two_tower_tiny.py \
      --repetitions=1 --output_dir=/tmp/bench_torch
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import harness
from benchmarks.torch_baseline import mf_benchmark, two_tower_benchmark
from recsys_jax.console import quiet_startup

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mf_ml100k.py",
                                          "Experiment config of the benchmarked model.",
                                          lock_config=True)
_MODELS = flags.DEFINE_list("models", ["mf"], "Models to benchmark: mf, two_tower.")
_VARIANTS = flags.DEFINE_list("variants", list(mf_benchmark.MF_VARIANTS),
                              "Variants to run; jax is always needed (the reference).")
_REPETITIONS = flags.DEFINE_integer("repetitions", 3, "Training runs per variant (medians).",
                                    lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Most epochs per run (default: the config's; "
                               "MF: early stopping still applies; two_tower: exactly this "
                               "many, no early stopping).", lower_bound=1)
_THREADS = flags.DEFINE_integer("threads", None, "CPU threads for every framework (default: "
                                "all CPUs this process may use).", lower_bound=1)
_TORCH_COMPILE = flags.DEFINE_boolean(
    "torch_compile", None, "torch.compile the model in the tuned variant (default: on for mf, "
    "off for two_tower, where compiling on CPU outlasts a whole ML-100K run).")
_RESAMPLES = flags.DEFINE_integer("bootstrap_resamples", 2000, "Bootstrap resamples for CIs.",
                                  lower_bound=100)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write Markdown and JSON.")


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = set(_MODELS.value) - {"mf", "two_tower"}
    if unknown:
        raise app.UsageError(f"unknown models {sorted(unknown)}; available: mf, two_tower")
    for model in _MODELS.value:
        if model == "mf":
            result = mf_benchmark.run_mf_benchmark(
                _CONFIG.value, variants=_VARIANTS.value, repetitions=_REPETITIONS.value,
                max_epochs=_EPOCHS.value, threads=_THREADS.value,
                torch_compile=_TORCH_COMPILE.value is not False,
                bootstrap_resamples=_RESAMPLES.value, log=logging.info)
            markdown = (mf_benchmark.format_mf_markdown(result) + "\n"
                        + result["comparison_markdown"])
        else:
            result = two_tower_benchmark.run_two_tower_benchmark(
                _CONFIG.value, variants=_VARIANTS.value, repetitions=_REPETITIONS.value,
                epochs=_EPOCHS.value, threads=_THREADS.value,
                torch_compile=bool(_TORCH_COMPILE.value),
                bootstrap_resamples=_RESAMPLES.value, log=logging.info)
            markdown = two_tower_benchmark.format_two_tower_markdown(result)
        print(markdown)
        if _OUTPUT_DIR.value:
            harness.write_results(_OUTPUT_DIR.value, f"benchmark_{model}", result, markdown)
            logging.info("wrote %s", _OUTPUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
