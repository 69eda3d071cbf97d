import json
import os

import ml_collections
import pytest

from recsys_jax.tasks.rating import RatingData
from recsys_jax.tasks.run_identity import (
    IDENTITY_FILE,
    RESULT_NEUTRAL_KEYS,
    WorkdirError,
    differences,
    identity_config,
    is_result_neutral,
    move_aside,
    read_identity,
)
from recsys_jax.tasks.runner import train_and_evaluate
from recsys_jax.tasks.workdir_lock import WorkdirLock, lock_path
from tests.tasks.planted import NUM_ITEMS, NUM_USERS, planted_ratings


def _config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "task": "rating", "run_name": "a",
        "model": {"name": "mf", "dim": 4, "init_std": 0.1},
        "optimizer": {"name": "adam", "lr": 0.05, "weight_decay": 0.0,
                      "schedule": "constant"},
        "training": {"loss": "mse", "l2_reg": 0.0, "batch_size": 64, "epochs": 2,
                     "patience": 0, "seed": 0, "data_on_device": "auto"},
        "data": {"dataset": "planted", "cache_dir": "/somewhere"},
        "analysis": {"enabled": True, "min_count": 3},
    })


def _data(fingerprint: str = "planted-0") -> RatingData:
    parts = {"train": planted_ratings(400, 0), "val": planted_ratings(80, 1),
             "test": planted_ratings(40, 2)}
    return RatingData.from_arrays(
        {name: (p["user"], p["item"], p["rating"]) for name, p in parts.items()},
        num_users=NUM_USERS, num_items=NUM_ITEMS, rating_scale=(1, 5),
        split_fingerprint=fingerprint)


def test_identity_keeps_the_result_keys_and_drops_the_neutral_ones():
    identity = identity_config(_config())
    assert identity["optimizer.lr"] == 0.05 and identity["model.dim"] == 4
    assert identity["training.seed"] == 0 and identity["data.dataset"] == "planted"
    for key in ("run_name", "data.cache_dir", "analysis.enabled", "analysis.min_count",
                "training.data_on_device"):
        assert key not in identity
    assert list(identity) == sorted(identity)


def test_neutral_key_patterns():
    assert is_result_neutral("analysis.titles") and is_result_neutral("run_name")
    assert is_result_neutral("index.quantizer") and is_result_neutral("index.kind")
    assert not is_result_neutral("analysis") and not is_result_neutral("training.epochs")
    assert not is_result_neutral("optimizer.lr") and not is_result_neutral("split.seed")
    assert all(is_result_neutral(k.replace("*", "x")) for k in RESULT_NEUTRAL_KEYS)


def test_differences_name_old_and_new_values():
    assert differences({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1, "b": [1, 3], "d": None}) == [
        "b: [1, 2] → [1, 3]", 'c: "x" → (absent)', "d: (absent) → null"]
    assert differences({"a": 1}, {"a": 1}) == []


def test_a_run_records_its_identity_and_resumes_under_it(tmp_path):
    first = train_and_evaluate(_config(), tmp_path, data=_data())
    identity = read_identity(tmp_path)
    assert identity["task"] == "rating" and identity["split_fingerprint"] == "planted-0"
    assert identity["config"] == identity_config(_config())
    # The lock was released: the next run (same identity, a neutral key changed) resumes.
    config = _config()
    config.run_name = "b"
    again = train_and_evaluate(config, tmp_path, data=_data())
    assert again.fit.epochs_run == 0 and again.fit.best_epoch == first.fit.best_epoch
    assert again.summary["test_rmse"] == pytest.approx(first.summary["test_rmse"])
    with WorkdirLock(tmp_path) as lock:
        assert lock.held and lock_path(tmp_path).exists()
    # Other prepared data under the same config is refused.
    with pytest.raises(WorkdirError, match="another split"):
        train_and_evaluate(_config(), tmp_path, data=_data("planted-1"))


def test_keys_made_neutral_since_a_run_was_recorded_no_longer_refuse_it(tmp_path):
    """A run recorded while ``index.*`` counted (its index keys in the identity, without the
    later ``index.quantizer``) resumes under today's config, whose index keys are neutral: the
    index is rebuilt from the trained model by every invocation. A key that still counts is
    still refused."""
    first = train_and_evaluate(_config(), tmp_path, data=_data())
    path = tmp_path / IDENTITY_FILE
    recorded = json.loads(path.read_text())
    recorded["config"].update({"index.kind": "ivf", "index.nprobe": 32})
    path.write_text(json.dumps(recorded))
    again = train_and_evaluate(_config(), tmp_path, data=_data())
    assert again.fit.epochs_run == 0 and again.fit.best_epoch == first.fit.best_epoch
    recorded["config"]["optimizer.lr"] = 0.5
    path.write_text(json.dumps(recorded))
    with pytest.raises(WorkdirError, match="optimizer.lr: 0.5 → 0.05"):
        train_and_evaluate(_config(), tmp_path, data=_data())


def test_a_run_that_never_got_past_preparation_takes_a_new_config(tmp_path):
    (tmp_path / "run_format.json").write_text('{"format": 3, "task": "rating"}')
    (tmp_path / "config.json").write_text("{}")  # Written before preparation failed.
    config = _config()
    config.optimizer.lr = 0.01
    train_and_evaluate(config, tmp_path, data=_data())
    assert read_identity(tmp_path)["config"]["optimizer.lr"] == 0.01


def test_move_aside_renames_beside_and_never_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda fmt: "20240102-030405")
    run = tmp_path / "run"
    for n in range(3):
        run.mkdir()
        (run / IDENTITY_FILE).write_text(json.dumps({"n": n}))
        moved = move_aside(run, is_run=True)
        assert not run.exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["run.replaced-20240102-030405", "run.replaced-20240102-030405-1",
                     "run.replaced-20240102-030405-2"]
    assert json.loads((moved / IDENTITY_FILE).read_text()) == {"n": 2}


def test_move_aside_leaves_missing_and_empty_directories(tmp_path):
    assert move_aside(tmp_path / "missing", is_run=False) is None
    (tmp_path / "empty").mkdir()
    assert move_aside(tmp_path / "empty", is_run=False) is None
    assert os.listdir(tmp_path) == ["empty"]
