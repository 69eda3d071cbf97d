r"""Times MF's optimizer update alone (no forward, backward or data) per epoch, in JAX and PyTorch.

Usage:
  python -m benchmarks.mf_optimizer_floor --config=configs/mf_ml100k.py --threads=1 \
      --output_dir=workdirs/mf_optimizer_floor

The parameter shapes come from the config's data set (users × items × ``model.dim``) and the
steps from its batch size and training split, so the figure is a floor under the epoch time of
``benchmarks/torch_vs_jax.py`` on the same config: no implementation of the recipe can train
an epoch faster (see ``benchmarks.torch_baseline.optimizer_floor``). Prints a Markdown table and
writes ``mf_optimizer_floor.{json,md}``.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import harness
from benchmarks.torch_baseline.optimizer_floor import (
    format_markdown,
    mf_parameter_shapes,
    run_floor,
)
from recsys_jax.console import quiet_startup
from recsys_jax.tasks.rating import load_rating_data
from recsys_jax.training.steps import steps_per_epoch

_CONFIG = config_flags.DEFINE_config_file("config", None, "MF experiment config file.",
                                          lock_config=True)
_THREADS = flags.DEFINE_integer("threads", 1, "CPU threads for every framework.")
_REPETITIONS = flags.DEFINE_integer("repetitions", 7, "Timed epochs per variant (median).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "workdirs/mf_optimizer_floor", "Output dir.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    data = load_rating_data(config)
    shapes = mf_parameter_shapes(data.num_users, data.num_items, int(config.model.dim))
    steps = steps_per_epoch(len(data.train["user"]), int(config.training.batch_size))
    result = run_floor(config.optimizer.to_dict(), shapes, steps=steps, threads=_THREADS.value,
                       repetitions=_REPETITIONS.value, log=logging.info)
    markdown = format_markdown(result)
    print(markdown)
    harness.write_results(_OUTPUT_DIR.value, "mf_optimizer_floor", result, markdown)


if __name__ == "__main__":
    app.run(main)
