"""Several processes (training.distributed): two processes of 4 host devices each train as one
process of 8 devices does, and their checkpoint restores in one process.

The runs happen in subprocesses (``multiprocess_worker``): two joined by ``jax.distributed`` on
localhost (gloo CPU collectives) and one reference process with 8 host devices; the tests
below compare what they wrote. The settings' parsing is checked here, without processes.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from recsys_jax.training import distributed

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("mf_lazy_adam_1x8", "two_tower_4x2")
MONITOR = {"mf_lazy_adam_1x8": "val_rmse", "two_tower_4x2": "val_ndcg@5"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "")
                          + f" --xla_force_host_platform_device_count={devices}").strip()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiprocess")
    worker = [sys.executable, "-m", "tests.training.multiprocess_worker", str(out)]
    port = _free_port()
    logs = [out / f"log_{i}.txt" for i in range(3)]  # Files: a full pipe would block.
    # The two processes and the one-process reference at once (it restores their checkpoint
    # when they are done).
    procs = [subprocess.Popen(worker + ["--num_processes=2", f"--process_id={i}",
                                        f"--coordinator_address=localhost:{port}"],
                              cwd=ROOT, env=_env(4), stdin=subprocess.DEVNULL,
                              stdout=logs[i].open("w"), stderr=subprocess.STDOUT)
             for i in range(2)]
    procs.append(subprocess.Popen(worker, cwd=ROOT, env=_env(8), stdin=subprocess.DEVNULL,
                                  stdout=logs[2].open("w"), stderr=subprocess.STDOUT))
    try:
        # A failing process leaves the others waiting for it: stop them all then.
        deadline = time.monotonic() + 300
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.5)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, p in enumerate(procs):
        p.wait()
        assert p.returncode == 0, f"{['process 0', 'process 1', 'reference'][i]} " \
            f"({p.returncode}):\n" + logs[i].read_text()[-4000:]
    return out, {name: json.loads((out / f"{name}.json").read_text())
                 for name in ("two_0", "two_1", "one_0")}


@pytest.mark.slow
def test_two_processes_each_see_4_of_8_devices(runs):
    _, results = runs
    for i in range(2):
        r = results[f"two_{i}"]
        assert (r["process_index"], r["process_count"], r["local_devices"]) == (i, 2, 4)
    assert (results["one_0"]["process_count"], results["one_0"]["local_devices"]) == (1, 8)


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_two_processes_train_as_one_process_of_8_devices(runs, run):
    """20 steps of the same global batches: the same per-epoch losses and validation metric,
    and the same final parameters and optimizer state, in both processes, as one process of
    8 devices (rtol 1e-5; entries near zero within 1e-5 of their array's largest magnitude)."""
    _, results = runs
    one = results["one_0"]["runs"][run]
    assert [r["epoch"] for r in one["history"]] == [1, 2]
    for i in range(2):
        two = results[f"two_{i}"]["runs"][run]
        for key in ("train_loss", MONITOR[run]):
            np.testing.assert_allclose([r[key] for r in two["history"]],
                                       [r[key] for r in one["history"]], rtol=1e-5,
                                       err_msg=f"{run}, process {i}: {key}")
        assert two["best_epoch"] == one["best_epoch"]
        assert sorted(two["state"]) == sorted(one["state"])
        for name, value in one["state"].items():
            value = np.asarray(value)
            np.testing.assert_allclose(two["state"][name], value, rtol=1e-5,
                                       atol=1e-5 * np.abs(value).max(),
                                       err_msg=f"{run}, process {i}: {name}")


@pytest.mark.slow
def test_each_process_feeds_only_its_rows_of_a_batch(runs):
    """On 4×2 each process holds two of the four data groups: it builds half of each batch of
    32; on 1×8 (one data group over both processes) each builds all of it; one process builds
    all."""
    _, results = runs
    assert results["two_0"]["runs"]["two_tower_4x2"]["batch_rows"] == [0, 16]
    assert results["two_1"]["runs"]["two_tower_4x2"]["batch_rows"] == [16, 32]
    for name in ("two_0", "two_1", "one_0"):
        assert results[name]["runs"]["mf_lazy_adam_1x8"]["batch_rows"] == [0, 32]
    assert results["one_0"]["runs"]["two_tower_4x2"]["batch_rows"] == [0, 32]


@pytest.mark.slow
def test_only_process_0_writes_the_metric_log(runs):
    out, _ = runs
    lines = (out / "workdirs" / "two" / "mf_lazy_adam_1x8" / "metrics.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in lines.splitlines()] == [1, 2]


@pytest.mark.slow
def test_a_checkpoint_saved_by_two_processes_restores_in_one(runs):
    """The latest checkpoint of the two processes' 1×8 MF run (epoch 2; each process wrote the
    rows its devices hold) restored on one device of one process: the final state of the
    one-process run."""
    _, results = runs
    restored = results["one_0"]["restored"]
    assert restored["epoch"] == 2 and len(restored["devices"]) == 1
    final = results["one_0"]["runs"]["mf_lazy_adam_1x8"]["state"]
    assert sorted(restored["state"]) == sorted(final)
    for name, value in final.items():
        value = np.asarray(value)
        np.testing.assert_allclose(restored["state"][name], value, rtol=1e-5,
                                   atol=1e-5 * np.abs(value).max(), err_msg=name)


def test_settings_come_from_arguments_then_the_environment():
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed.settings_from(environ=env) == distributed.Settings("h:1", 4, 3)
    assert distributed.settings_from("x:2", 2, 0, ["1", "2"], environ=env) == \
        distributed.Settings("x:2", 2, 0, (1, 2))
    nothing = distributed.settings_from(environ={})
    assert not nothing.wanted and distributed.settings_from(auto_detect=True, environ={}).wanted
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.settings_from(environ={"JAX_NUM_PROCESSES": "two"})


def test_one_process_initialises_nothing():
    """Nothing set, or one process asked for: no jax.distributed, the run is as before."""
    assert not distributed.initialize(distributed.Settings())
    assert not distributed.initialize(distributed.Settings("localhost:1", 1, 0))
    assert distributed.is_primary() and not distributed.is_multiprocess()
