r"""Where a two-tower training step spends its time: JAX vs PyTorch, piece by piece.

Usage (ML-100K shapes of configs/two_tower_ml100k.py, random inputs, no data needed):
  python -m benchmarks.profile_two_tower --threads=2 --repetitions=20 \
      --output_dir=workdirs/profile_two_tower
Shapes read from a config's real data (runs prepare_retrieval_data once; shape flags given
explicitly still override):
  python -m benchmarks.profile_two_tower --from_config \
      --config=configs/two_tower_ml100k.py --output_dir=workdirs/profile_two_tower

Times, in each framework and in its own fresh process with the same thread settings: the full
training step (a), the same in JAX's lax.scan (a′), the step without the history tower (b), the
towers alone (c, c′), the B×B in-batch softmax alone (d) and the AdamW update alone (e); see
``benchmarks.torch_baseline.two_tower_profile``. Prints a Markdown table and writes
``profile_two_tower.md`` and ``profile_two_tower.json`` to ``--output_dir``. Needs the
``baseline`` extra (torch). Smoke test (seconds):
  python -m benchmarks.profile_two_tower --batch_size=32 --user_dim=5 --item_dim=7 \
      --num_users=20 --num_items=30 --history_len=4 --hidden_dim=16 --dim=8 \
      --repetitions=2 --output_dir=/tmp/profile_two_tower
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import harness
from benchmarks.torch_baseline import two_tower_profile
from recsys_jax.console import quiet_startup

_DEFAULTS = two_tower_profile.ProfileShapes()
_ROOT = Path(__file__).resolve().parents[1]

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(_ROOT / "configs" / "two_tower_ml100k.py"),
    "Two-tower config whose shapes --from_config reads.", lock_config=True)
_FROM_CONFIG = flags.DEFINE_boolean(
    "from_config", False, "Take the shapes from --config's prepared data (loads the data set) "
    "instead of the built-in ML-100K defaults.")
_THREADS = flags.DEFINE_integer("threads", None, "CPU threads for each framework (default: "
                                "all CPUs this process may use).", lower_bound=1)
_REPETITIONS = flags.DEFINE_integer("repetitions", 20, "Timed calls per piece (medians).",
                                    lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls per piece before timing (at least "
                               "one is always made).", lower_bound=0)
_SCAN_STEPS = flags.DEFINE_integer("scan_steps", 8, "Batches per lax.scan in the scanned JAX "
                                   "step (0: leave that piece out).", lower_bound=0)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random inputs and parameters.")
_TIMEOUT = flags.DEFINE_float("timeout_s", None, "Time limit per framework worker.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write Markdown and JSON.")

# One flag per ProfileShapes field (defaults: ML-100K's).
_SHAPE_FLAGS = {}
for _field in dataclasses.fields(two_tower_profile.ProfileShapes):
    _default = getattr(_DEFAULTS, _field.name)
    _help = f"ProfileShapes.{_field.name} (default: ML-100K's)."
    if isinstance(_default, bool):
        _SHAPE_FLAGS[_field.name] = flags.DEFINE_boolean(_field.name, _default, _help)
    elif isinstance(_default, float):
        _SHAPE_FLAGS[_field.name] = flags.DEFINE_float(_field.name, _default, _help)
    else:
        _SHAPE_FLAGS[_field.name] = flags.DEFINE_integer(_field.name, _default, _help,
                                                         lower_bound=1)


def shapes_from_flags() -> two_tower_profile.ProfileShapes:
    """The shape flags, or with ``--from_config`` the config's shapes with the shape flags
    given explicitly on the command line on top."""
    if not _FROM_CONFIG.value:
        return two_tower_profile.ProfileShapes(
            **{name: flag.value for name, flag in _SHAPE_FLAGS.items()})
    overrides = {name: flag.value for name, flag in _SHAPE_FLAGS.items()
                 if flags.FLAGS[name].present}
    return two_tower_profile.shapes_from_config(_CONFIG.value, **overrides)


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    shapes = shapes_from_flags()
    logging.info("profiling %s", shapes)
    result = two_tower_profile.run_profile(
        shapes, threads=_THREADS.value, repetitions=_REPETITIONS.value, warmup=_WARMUP.value,
        scan_steps=_SCAN_STEPS.value, seed=_SEED.value, timeout_s=_TIMEOUT.value,
        log=logging.info)
    markdown = two_tower_profile.format_profile_markdown(result)
    print(markdown)
    if _OUTPUT_DIR.value:
        harness.write_results(_OUTPUT_DIR.value, "profile_two_tower", result, markdown)
        logging.info("wrote %s", _OUTPUT_DIR.value)


if __name__ == "__main__":
    app.run(main)
