import pytest

from benchmarks import harness, jax_epochs
from recsys_jax.tasks.rating import make_rating_loss
from tests.tasks.planted import make_model_and_optimizer, planted_ratings


def test_both_modes_run_the_same_updates():
    train_columns = planted_ratings(1000, seed=0)

    def make_model():
        return make_model_and_optimizer(train_columns)

    kwargs = dict(batch_size=128, epochs=2, seed=0)
    loss_fn = make_rating_loss("mse")
    scan = jax_epochs.time_scan_epochs(make_model, loss_fn, train_columns, **kwargs)
    loop = jax_epochs.time_step_loop(make_model, loss_fn, train_columns, **kwargs)
    assert scan.final_loss == pytest.approx(loop.final_loss, rel=1e-5)
    for timing in (scan, loop):
        assert len(timing.epoch_times_s) == 2 and timing.steps_per_epoch == 8
        assert timing.compile_s > 0 and timing.ratings_per_s > 0
        assert set(timing.to_dict()) >= {"median_epoch_s", "ratings_per_s", "steps_per_s"}
    env = harness.environment(device=True)
    assert env["backend"] and env["cpu"]
    table = jax_epochs.format_table([scan, loop], env)
    assert "scan_epoch" in table and "step_loop" in table
    assert table.startswith(f"CPU: {env['cpu']}, ")
