"""Bad input to a run: a reused workdir with another config, concurrent runs, bad config values,
a diverging run. Each gets a clear error before it can do harm, and nothing is left corrupt.

The runs are ``configs/mf_tiny.py`` (synthetic data) through ``train_and_evaluate``, in process;
one finished run is trained once per module and copied for each test that reuses a workdir.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from recsys_jax.config_files import sibling_config
from recsys_jax.tasks.config_checks import ConfigError
from recsys_jax.tasks.rating import RatingTask
from recsys_jax.tasks.run_identity import IDENTITY_FILE, WorkdirError, read_identity
from recsys_jax.tasks.runner import RUN_FORMAT_FILE, train_and_evaluate
from recsys_jax.tasks.workdir_lock import WorkdirLock, WorkdirLocked, lock_path
from recsys_jax.training.checkpoints import CheckpointStore
from recsys_jax.training.loop import DivergenceError, read_metrics
from recsys_jax.training.steps import steps_per_epoch
from tests.tasks.train_script import run_train
from tests.training.poison import poisoned_in_steps

REPO = Path(__file__).resolve().parents[2]
_ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # This checkout's recsys_jax, not another.


def tiny_config() -> ml_collections.ConfigDict:
    config = sibling_config(REPO / "configs" / "any.py", "mf_tiny")
    config.analysis.enabled = False  # The t-SNE is not what these tests are about.
    config.training.epochs = 2
    return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train_and_evaluate(tiny_config(), workdir)
    return workdir


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A private copy of the finished run."""
    return Path(shutil.copytree(finished_run, tmp_path / "run", symlinks=True))


def _snapshot(workdir: Path) -> dict[str, bytes]:
    """Every file of ``workdir`` (except lock files) and its bytes."""
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*"))
            if p.is_file() and not p.name.startswith("lock.")}


@pytest.mark.parametrize("key, value", [("split.seed", 7), ("data.seed", 3),
                                        ("optimizer.lr", 0.02)])
def test_changed_result_key_is_refused(run, key, value):
    before = _snapshot(run)
    config = tiny_config()
    block, name = key.split(".")
    old = config[block][name]
    config[block][name] = value
    with pytest.raises(WorkdirError, match=rf"1 key\(s\) differ.*\n  {key}: "
                       rf"{json.dumps(old)} → {json.dumps(value)}\n.*new --workdir.*"
                       r"--overwrite") as raised:
        train_and_evaluate(config, run)
    assert str(run) in str(raised.value)
    # Nothing was overwritten: config.json, split/, ids/, run/, checkpoints are as they were.
    assert _snapshot(run) == before


def test_every_changed_key_is_named(run):
    config = tiny_config()
    config.split.seed, config.optimizer.lr, config.model.dim = 7, 0.02, 4
    with pytest.raises(WorkdirError, match=r"3 key\(s\) differ") as raised:
        train_and_evaluate(config, run)
    for line in ("model.dim: 8 → 4", "optimizer.lr: 0.01 → 0.02", "split.seed: 0 → 7"):
        assert line in str(raised.value)


def test_changed_logging_only_keys_resume(run):
    recorded = json.loads((run / "test_metrics.json").read_text())
    config = tiny_config()
    config.run_name = "renamed"
    config.analysis.permutations = 5
    config.training.eval_chunk_size = 7
    config.training.data_on_device = "never"
    config.tensorboard = False
    result = train_and_evaluate(config, run)
    assert result.fit.epochs_run == 0 and result.fit.best_epoch == recorded["best_epoch"]
    assert result.summary["test_rmse"] == pytest.approx(recorded["test_rmse"], rel=1e-5)
    # config.json records the latest invocation; the identity is unchanged.
    assert json.loads((run / "config.json").read_text())["run_name"] == "renamed"
    assert "run_name" not in read_identity(run)["config"]


def test_overwrite_moves_the_old_run_aside(run):
    before = _snapshot(run)
    config = tiny_config()
    config.split.seed = 7
    config.training.epochs = 1
    result = train_and_evaluate(config, run, overwrite=True)
    moved = [p for p in run.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1
    assert _snapshot(moved[0]) == before  # The old run, whole and unchanged.
    assert read_identity(moved[0])["config"]["split.seed"] == 0
    assert read_identity(run)["config"]["split.seed"] == 7
    assert result.fit.resumed_from is None and result.fit.last_epoch == 1
    assert [r["epoch"] for r in read_metrics(run)] == [1]


def test_overwrite_refuses_to_move_a_directory_without_a_run(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(WorkdirError, match="holds no recsys_jax run.*new --workdir"):
        train_and_evaluate(tiny_config(), folder, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    assert [p.name for p in folder.iterdir()] == ["thesis.tex"]


def test_changed_split_fingerprint_is_refused_before_training(run):
    # Same config, other data (as another data_dir or a changed data file would give).
    identity = json.loads((run / IDENTITY_FILE).read_text())
    identity["split_fingerprint"] = "0" * 64
    (run / IDENTITY_FILE).write_text(json.dumps(identity))
    before = _snapshot(run)
    with pytest.raises(WorkdirError, match=r"another split \(fingerprint 0000.*recorded.*"
                       r"data changed.*--overwrite"):
        train_and_evaluate(tiny_config(), run)
    assert _snapshot(run) == before  # split/, ids/ and config.json untouched.


def test_run_outputs_without_an_identity_are_refused(run):
    (run / IDENTITY_FILE).unlink()
    with pytest.raises(WorkdirError, match=rf"no {IDENTITY_FILE}.*cannot be checked"):
        train_and_evaluate(tiny_config(), run)


def test_unreadable_identity_is_refused(run):
    (run / IDENTITY_FILE).write_text('{"config": ')
    with pytest.raises(WorkdirError, match=rf"{IDENTITY_FILE} is unreadable"):
        train_and_evaluate(tiny_config(), run)


def test_workdir_of_layout_2_is_refused(run):
    (run / RUN_FORMAT_FILE).write_text('{"format": 2, "task": "rating"}')
    (run / IDENTITY_FILE).unlink()
    with pytest.raises(WorkdirError, match=r"layout 2.*no run identity.*NaN.*--overwrite"):
        train_and_evaluate(tiny_config(), run)


def test_second_concurrent_run_is_refused(run):
    before = _snapshot(run)
    with WorkdirLock(run):
        with pytest.raises(WorkdirLocked, match=rf"{run} is in use by another run "
                           rf"\(pid {os.getpid()} on .*one run per workdir"):
            train_and_evaluate(tiny_config(), run)
        with pytest.raises(WorkdirLocked):  # Nor may --overwrite move it away.
            train_and_evaluate(tiny_config(), run, overwrite=True)
    assert _snapshot(run) == before
    assert not any(p.name.startswith("run.replaced-") for p in run.parent.iterdir())


@pytest.mark.slow
def test_lock_of_a_killed_run_is_released_by_the_kernel(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from recsys_jax.tasks.workdir_lock import WorkdirLock
            WorkdirLock({str(tmp_path)!r}).acquire()
            print("locked", flush=True)
            time.sleep(60)
            """)], cwd=REPO, stdout=subprocess.PIPE, text=True, env=_ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLocked, match=rf"pid {holder.pid} on"):
            WorkdirLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with WorkdirLock(tmp_path) as lock:  # No stale lock after a SIGKILL.
        assert lock.held and lock_path(tmp_path).exists()


@pytest.mark.parametrize("key, value, message", [
    ("optimizer.lr", float("nan"), "must be a finite number"),
    ("optimizer.lr", -1.0, r"must be in \(0, inf\)"),
    ("optimizer.lr", 0.0, r"must be in \(0, inf\)"),
    ("optimizer.lr", float("inf"), "must be a finite number"),
    ("training.epochs", 0, "must be an integer >= 1"),
    ("training.batch_size", 0, "must be an integer >= 1"),
    ("training.patience", -1, "must be an integer >= 0"),
    ("optimizer.weight_decay", -1e-5, r"must be in \[0, inf\)"),
    ("optimizer.name", "adma", "must be one of"),
    ("optimizer.schedule", "cosin", "must be one of"),
    ("model.name", "mff", "must be one of"),
    ("model.dim", 0, "must be an integer >= 1"),
    ("split.name", "randon", "must be one of"),
    ("split.val_fraction", 0.0, r"must be in \(0, 1\)"),
    ("split.test_fraction", 1.5, r"must be in \(0, 1\)"),
    ("split.val_fraction", 0.95, "must be < 1 so training keeps rows"),
    ("data.dataset", "ml-100", "must be one of"),
    ("data.num_users", 0, "must be an integer >= 1"),
    ("training.loss", "mae", "must be one of"),
    ("training.monitor", "rmse", "is not a monitor name"),
    ("training.data_on_device", "sometimes", "must be one of"),
])
def test_bad_config_value_is_refused_before_any_work(tmp_path, key, value, message):
    config = tiny_config()
    block, name = key.split(".")
    config[block][name] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(key) + ".*" + message):
        train_and_evaluate(config, workdir)
    assert not workdir.exists()  # Refused before anything was touched.


def test_every_bad_value_is_listed_at_once(tmp_path):
    config = tiny_config()
    config.optimizer.lr, config.training.epochs = -1.0, 0
    with pytest.raises(ConfigError, match=r"2 problem\(s\)") as raised:
        train_and_evaluate(config, tmp_path / "run")
    assert "optimizer.lr = -1.0" in str(raised.value)
    assert "training.epochs = 0" in str(raised.value)


def test_nan_loss_mid_training_stops_with_a_clear_error(tmp_path, monkeypatch):
    config = tiny_config()
    config.training.epochs = 3
    original = RatingTask.loss

    def loss_nan_in_epoch_2(self, config, data):
        per_epoch = steps_per_epoch(len(data.train["user"]), config.training.batch_size)
        return poisoned_in_steps(original(self, config, data), config.training.seed,
                                 range(per_epoch, 2 * per_epoch))

    monkeypatch.setattr(RatingTask, "loss", loss_nan_in_epoch_2)
    workdir = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"diverged in epoch 2: the training loss is nan"
                       r".*end at epoch 1.*optimizer\.lr"):
        train_and_evaluate(config, workdir)
    # No NaN artefact: epoch 1 is the last record and the best checkpoint; nothing exported.
    assert [r["epoch"] for r in read_metrics(workdir)] == [1]
    assert all(np.isfinite(v) for k, v in read_metrics(workdir)[0].items()
               if isinstance(v, float))
    with CheckpointStore(workdir / "checkpoints", monitor="val_rmse") as store:
        assert store.best_epoch() == 1 and store.latest_epoch() == 1
    for name in ("test_metrics.json", "model", "user_embeddings.npy", "test_predictions.npy",
                 "run", "report.md"):
        assert not (workdir / name).exists(), name
    # The same run, its cause removed, resumes from the last finite epoch (never restores a
    # diverged one).
    monkeypatch.setattr(RatingTask, "loss", original)
    result = train_and_evaluate(config, workdir)
    assert result.fit.resumed_from == 1 and result.fit.last_epoch == 3
    assert np.isfinite(result.summary["test_rmse"])


@pytest.mark.slow
def test_train_script_reports_a_refusal_without_a_traceback(tmp_path):
    proc = run_train("mf_tiny", tmp_path / "run", "--config.optimizer.lr=-1")
    assert proc.returncode == 1
    assert "ConfigError" in proc.stderr and "optimizer.lr = -1.0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
