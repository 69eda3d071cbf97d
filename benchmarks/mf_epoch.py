r"""Measures steady-state MF training throughput (ratings/s) and epoch time, compile apart.

Usage:
  python -m benchmarks.mf_epoch --config=configs/mf_ml100k.py --epochs=7 \
      --output=workdirs/benchmark_mf.json

Times the scanned on-device epoch (the training path) and, for comparison, a Python loop over
a jitted step, on the config's training split; prints a Markdown table and writes the figures
(with versions and hardware) as JSON.
"""

from __future__ import annotations

from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from benchmarks import harness, jax_epochs
from recsys_jax.console import quiet_startup
from recsys_jax.models.registry import build_model
from recsys_jax.tasks.rating import load_rating_data, make_rating_loss
from recsys_jax.training.optimizers import make_model_optimizer
from recsys_jax.training.steps import steps_per_epoch

_CONFIG = config_flags.DEFINE_config_file("config", "configs/mf_ml100k.py",
                                          "Experiment config file.", lock_config=True)
_EPOCHS = flags.DEFINE_integer("epochs", 7, "Timed epochs per mode (the median is reported).",
                               lower_bound=1)
_STEP_LOOP_EPOCHS = flags.DEFINE_integer(
    "step_loop_epochs", 3, "Timed epochs of the per-step loop; 0 skips it.", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON results.")


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    data = load_rating_data(config)
    t = config.training
    num_steps = steps_per_epoch(len(data.train["rating"]), t.batch_size)

    def make_model():
        model = build_model(config.model, num_users=data.num_users, num_items=data.num_items,
                            train=data.train, rngs=nnx.Rngs(params=t.seed))
        # As the runner builds it: dense or row-sparse tables per optimizer.tables.
        optimizer, _ = make_model_optimizer(model, config.optimizer, steps_per_epoch=num_steps,
                                            num_epochs=t.epochs)
        return model, optimizer

    loss_fn = make_rating_loss(t.loss, t.l2_reg)
    kwargs = dict(batch_size=t.batch_size, seed=t.seed)
    timings = [jax_epochs.time_scan_epochs(make_model, loss_fn, data.train, epochs=_EPOCHS.value,
                                          **kwargs)]
    if _STEP_LOOP_EPOCHS.value:
        timings.append(jax_epochs.time_step_loop(make_model, loss_fn, data.train,
                                                epochs=_STEP_LOOP_EPOCHS.value, **kwargs))
    env = harness.environment(device=True)
    print(f"{config.data.dataset}: {len(data.train['rating']):,} training ratings, "
          f"batch {t.batch_size} ({num_steps} steps/epoch), {config.model.name} dim "
          f"{config.model.get('dim')}, {config.optimizer.name}; {env['cpu_count']} CPUs")
    print(jax_epochs.format_table(timings, env))
    if _OUTPUT.value:
        harness.write_json(_OUTPUT.value, {
            "dataset": config.data.dataset, "split": config.split.name,
            "model": config.model.to_dict(), "optimizer": config.optimizer.name,
            "batch_size": t.batch_size, "environment": env,
            "timings": [timing.to_dict() for timing in timings]})
        logging.info("wrote %s", _OUTPUT.value)


if __name__ == "__main__":
    app.run(main)
