"""The benchmark harness: timing rules, environment facts, worker launch, output files."""

import json
import os

import pytest

from benchmarks import harness


def _run(times, compile_s=0.5, **extra):
    return {"history": [{"epoch_time_s": t} for t in times], "compile_s": compile_s,
            "setup_s": 0.1, "total_s": 9.0, **extra}


def test_steady_epoch_is_the_median_after_the_first():
    assert harness.steady_epoch(_run([5.0, 1.0, 3.0, 2.0])["history"]) == 2.0
    assert harness.steady_epoch(_run([4.0])["history"]) == 4.0
    with pytest.raises(ValueError):
        harness.steady_epoch([])


def test_warmup_and_summary_use_the_known_answers():
    runs = [_run([5.0, 1.0, 3.0]), _run([3.0, 2.0, 2.0], compile_s=1.0,
                                        peak_rss_training_mib=10.0)]
    assert harness.warmup_s(runs[0]) == pytest.approx(0.5 + (5.0 - 2.0))
    summary = harness.summarize_speed(runs, num_train=100)
    assert summary["steady_epoch_s_all"] == [2.0, 2.0]
    assert summary["examples_per_s"] == pytest.approx(50.0)
    assert summary["warmup_s"] == pytest.approx((3.5 + 2.0) / 2)
    assert summary["peak_rss_training_mib"] == 10.0  # The run without it is skipped.
    assert summary["epochs_trained"] == [3, 3]


def test_time_calls_times_only_the_repetitions():
    calls = []
    median_s, times = harness.time_calls(lambda: calls.append(1), 3, warmup=2)
    assert len(calls) == 5 and len(times) == 3 and median_s >= 0


def test_environment_names_the_cpu_and_versions():
    env = harness.environment(threads=2, workers={"jax": [{"environment": {"threads": 2}}],
                                                  "torch": []})
    assert env["cpu"] == harness.cpu_model() and env["cpu"]
    assert env["threads"] == 2 and env["workers"] == {"jax": {"threads": 2}}
    assert "jax" in env["versions"] and "backend" not in env
    assert harness.cpu_line(env).startswith(f"CPU: {env['cpu']}, 2 thread(s)")


def test_thread_environment_replaces_earlier_xla_thread_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1 intra_op_parallelism_threads=7")
    env = harness.thread_environment(3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["XLA_FLAGS"].split() == ["--xla_foo=1", "--xla_cpu_multi_thread_eigen=true",
                                        "intra_op_parallelism_threads=3"]


def test_worker_env_puts_the_repository_first(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = harness.worker_env(1)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(harness.REPO_ROOT), "/elsewhere"]
    assert env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] == "1"


@pytest.mark.slow
def test_run_worker_process_finds_the_package_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "")
    result = harness.run_worker_process({"threads": 1}, tmp_path / "w",
                                        module="benchmarks.harness")
    assert result["module_file"] == str(harness.REPO_ROOT / "benchmarks" / "harness.py")
    assert result["cwd"] == str(harness.REPO_ROOT)
    assert result["environment"]["OMP_NUM_THREADS"] == "1"
    assert len(result["environment"]["cpu_affinity"]) == 1


@pytest.mark.slow
def test_run_worker_process_reports_failures(tmp_path):
    with pytest.raises(RuntimeError, match="failed with exit code"):
        harness.run_worker_process({"threads": 1, "variant": "x"}, tmp_path,
                                   module="benchmarks.no_such_module")


def test_write_results_and_table(tmp_path):
    harness.write_results(tmp_path / "out", "bench", {"a": 1}, "# md\n")
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == {"a": 1}
    assert (tmp_path / "out" / "bench.md").read_text() == "# md\n"
    table = harness.markdown_table(["x", "y"], [["a", 1], ["b", 2]])
    assert table.splitlines() == ["| x | y |", "|---|---:|", "| a | 1 |", "| b | 2 |"]
    with pytest.raises(ValueError):
        harness.markdown_table(["x"], [["a", "b"]])
    assert harness.ratio(3.0, 1.5) == "2.00×" and harness.ratio(None, 1.0) == "—"


def test_process_peak_is_the_workers_own_not_the_parents():
    """With the start-up's VmHWM read before the reset, the process peak is the larger of it
    and VmHWM now, not ru_maxrss (which a large parent sets across fork and exec)."""
    now = harness.status_kib("VmHWM")
    if now is None:
        pytest.skip("no /proc/self/status")
    larger = harness.memory_fields(1024, 2048, now + 10 * 1024)
    assert larger["peak_rss_process_mib"] == (now + 10 * 1024) / 1024
    smaller = harness.memory_fields(1024, 2048, 1)
    assert smaller["peak_rss_process_mib"] >= now / 1024  # VmHWM only grows
    assert (smaller["rss_before_training_mib"], smaller["peak_rss_training_mib"]) == (1.0, 2.0)


def test_parse_overrides_reads_literals_and_keeps_other_text():
    assert harness.parse_overrides(["training.batch_size=1024", "features.titles=False",
                                    "optimizer.tables=lazy_adam", "model.l2='1e-3'",
                                    " a.b =1.5"]) == {
        "training.batch_size": 1024, "features.titles": False,
        "optimizer.tables": "lazy_adam", "model.l2": "1e-3", "a.b": 1.5}
    for bad in ("training.batch_size", "=3"):
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            harness.parse_overrides([bad])
