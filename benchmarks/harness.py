"""The benchmark harness every script in ``benchmarks/`` uses.

* **Timing**: medians of repetitions with the warm-up (and compilation) kept apart
  (``time_calls``, ``steady_epoch``, ``warmup_s``, ``summarize_speed``).
* **Environment**: the facts a figure was measured under (``cpu_model`` from
  ``/proc/cpuinfo``, CPU counts and affinity, thread settings, jax/flax/optax/torch versions
  read from the installed packages without importing them, the JAX device when asked).
* **Workers**: one measurement per fresh interpreter with fixed thread settings
  (``thread_environment``, ``set_threads``, ``framework_info``, ``run_worker_process``) and
  its peak memory (``TrainingMemory``, ``memory_fields``).
* **Output**: JSON and Markdown written atomically through ``recsys_jax.fileio``
  (``write_results``, ``write_json``) and Markdown tables (``markdown_table``, ``ratio``,
  ``fmt_mib``, ``fmt_s``, ``cpu_line``).

This module imports neither framework nor NumPy at the top: a worker calls ``set_threads``
before anything reads the thread variables.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Benchmarks are not installed: they run from the repository root (``python -m benchmarks.x``),
# and the workers they start get this directory on their ``PYTHONPATH``.
REPO_ROOT = Path(__file__).resolve().parents[1]
VERSIONED = ("jax", "jaxlib", "flax", "optax", "numpy", "torch")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
WORKER_RESULT = "result.json"  # What a worker writes into its work directory.


# --- Timing ---------------------------------------------------------------------------------

def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the benchmarks' ``--set``) as config overrides; values are read as
    Python literals where they parse as one (``1024``, ``True``, ``"lazy_adam"``), else kept as
    text.

    Raises:
      ValueError: for an item without ``=`` or with an empty key.
    """
    import ast
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            overrides[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key.strip()] = text
    return overrides


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def time_calls(run: Callable[[], Any], repetitions: int, *, warmup: int = 0
               ) -> tuple[float, list[float]]:
    """``(median seconds, every timed call's seconds)`` of ``repetitions`` calls of ``run``
    after ``warmup`` untimed ones. ``run`` must wait for its own results (e.g.
    ``jax.block_until_ready``)."""
    if repetitions < 1:
        raise ValueError(f"repetitions must be >= 1, got {repetitions}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repetitions):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def steady_epoch(history: Sequence[Mapping[str, float]]) -> float:
    """Median ``epoch_time_s`` after the first epoch (which includes warm-up); the only epoch
    when there is one."""
    times = [h["epoch_time_s"] for h in history]
    if not times:
        raise ValueError("no epoch to time")
    return statistics.median(times[1:] if len(times) > 1 else times)


def warmup_s(run: Mapping[str, Any]) -> float:
    """Explicit compile plus epoch 1's excess over the steady epoch (``torch.compile`` and
    allocator warm-up happen in epoch 1)."""
    history = run["history"]
    return run["compile_s"] + max(0.0, history[0]["epoch_time_s"] - steady_epoch(history))


def summarize_speed(runs: Sequence[Mapping[str, Any]], num_train: int) -> dict[str, Any]:
    """Medians over repetitions of the speed and memory figures every training benchmark
    reports (each run: ``history``, ``compile_s``, ``setup_s``, ``total_s`` and the
    ``memory_fields``)."""
    steady = [steady_epoch(r["history"]) for r in runs]
    epoch = median(steady)
    return {
        "repetitions": len(runs),
        "steady_epoch_s": epoch,
        "steady_epoch_s_all": steady,
        "examples_per_s": num_train / epoch,
        "warmup_s": median([warmup_s(r) for r in runs]),
        "compile_s": median([r["compile_s"] for r in runs]),
        "setup_s": median([r["setup_s"] for r in runs]),
        "total_s": median([r["total_s"] for r in runs]),
        "epochs_trained": [len(r["history"]) for r in runs],
        "peak_rss_training_mib": median([r.get("peak_rss_training_mib") for r in runs]),
        "peak_rss_process_mib": median([r.get("peak_rss_process_mib") for r in runs]),
    }


def fit_timings(result: Any, wall_s: float) -> dict[str, Any]:
    """The benchmark's timings of one ``recsys_jax.training.loop.fit`` run.

    Args:
      result: the ``FitResult`` (``compile_time_s``, ``history`` with ``epoch_time_s`` and
        ``eval_time_s`` per epoch, ``best_epoch``).
      wall_s: wall time of the whole call that built the model and ran ``fit``.

    Returns:
      ``setup_s``: everything in ``wall_s`` that is neither compilation nor an epoch nor its
      validation (building model, optimizer, loss and evaluator, the loop's bookkeeping and
      keeping the best state); ``compile_s``; ``history``; ``best_epoch``;
      ``time_to_best_s`` = setup + compile + Σ over epochs ≤ best of (epoch + validation);
      ``total_s`` = ``wall_s``.
    """
    history = [dict(h) for h in result.history]
    epochs_s = [h["epoch_time_s"] + h.get("eval_time_s", 0.0) for h in history]
    compile_s = float(result.compile_time_s)
    setup_s = max(0.0, wall_s - compile_s - sum(epochs_s))
    best = result.best_epoch
    return {"setup_s": setup_s, "compile_s": compile_s, "history": history,
            "best_epoch": best, "total_s": wall_s,
            "time_to_best_s": (None if best is None
                               else setup_s + compile_s + sum(epochs_s[:best]))}


# --- Environment ----------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def default_threads() -> int:
    """The CPUs this process may run on."""
    cpus = _affinity()
    return len(cpus) if cpus else (os.cpu_count() or 1)


def package_versions(names: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of ``names`` (those installed), without importing them."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def jax_device() -> dict[str, str]:
    """JAX's backend and first device (imports JAX and starts its backend)."""
    import jax
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind}


def environment(threads: int | None = None,
                workers: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, *,
                device: bool = False) -> dict[str, Any]:
    """Machine, versions and thread settings a benchmark ran under.

    Args:
      threads: the thread count every framework was given (default: this process's CPUs).
      workers: per variant, its runs' results; the first run's ``environment`` (what the
        worker reported: affinity, thread variables, framework versions) is kept.
      device: add JAX's ``backend`` and ``device`` (starts JAX's backend in this process;
        leave off in an orchestrator whose workers use the accelerator).
    """
    env = {
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": _affinity(),
        "threads": threads or default_threads(),
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "versions": package_versions(),
    }
    if device:
        env.update(jax_device())
    if workers is not None:
        env["workers"] = {v: runs[0]["environment"] for v, runs in workers.items() if runs}
    return env


def cpu_line(env: Mapping[str, Any]) -> str:
    """``CPU: <model>, <n> thread(s>`` plus JAX's device when known, for setup lines."""
    device = f"; JAX {env['backend']} ({env['device']})" if "backend" in env else ""
    return f"CPU: {env['cpu']}, {env['threads']} thread(s){device}"


# --- Workers --------------------------------------------------------------------------------

def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap both frameworks' intra-op threads at ``threads``.

    PyTorch (OpenMP, MKL) reads ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` at start-up (and the
    worker also calls ``torch.set_num_threads``); XLA's CPU client sizes its intra-op Eigen
    pool from ``intra_op_parallelism_threads`` in ``XLA_FLAGS``. CPU affinity, set by the
    worker itself, is the hard limit for both.
    """
    xla = os.environ.get("XLA_FLAGS", "")
    xla = " ".join(f for f in xla.split() if "intra_op_parallelism_threads" not in f
                   and "xla_cpu_multi_thread_eigen" not in f)
    # XLA takes this one without the leading dashes (with them it aborts: "Unknown flag").
    xla = f"{xla} --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}"
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "XLA_FLAGS": xla.strip()}


def set_threads(threads: int) -> dict[str, Any]:
    """Pins this process to ``threads`` CPUs and caps the frameworks' pools (call it before
    importing NumPy, JAX or torch); returns the settings for the result's ``environment``."""
    os.environ.update(thread_environment(threads))
    cpus = _affinity()
    if cpus and threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    return {"threads": threads, "cpu_affinity": _affinity() if cpus else None,
            **{k: os.environ[k] for k in thread_environment(threads)}}


def framework_info(variant: str, threads: int) -> dict[str, Any]:
    """Versions and thread pools of the framework a worker runs (imports it): JAX for
    ``"jax"`` (its backend started, as importing torch starts torch's pools), else torch with
    ``torch.set_num_threads(threads)``."""
    if variant == "jax":
        import jax
        jax.devices()
        return {"jax": jax.__version__, **jax_device()}
    import torch
    torch.set_num_threads(threads)
    return {"torch": torch.__version__, "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(), "device": "cpu"}


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB, if readable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (``VmHWM``) so later peaks exclude start-up."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_fields(rss_before_kib: float | None, peak_training_kib: float | None,
                  peak_before_reset_kib: float | None = None) -> dict[str, float | None]:
    """RSS before training, peak during training (when the peak could be reset) and peak of
    the whole process, in MiB.

    The process peak is the larger of ``peak_before_reset_kib`` (``VmHWM`` read just before
    ``reset_peak_rss``) and ``VmHWM`` now; without them, ``ru_maxrss``, which Linux carries
    over from the parent across fork and exec (a large parent then sets it).
    """
    now_kib = status_kib("VmHWM")
    if peak_before_reset_kib is not None and now_kib is not None:
        process_kib = max(peak_before_reset_kib, now_kib)
    else:  # ru_maxrss is in KiB on Linux.
        process_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rss_before_training_mib": None if rss_before_kib is None else rss_before_kib / 1024,
        "peak_rss_training_mib": None if peak_training_kib is None else peak_training_kib / 1024,
        "peak_rss_process_mib": process_kib / 1024}


@dataclasses.dataclass(frozen=True)
class TrainingMemory:
    """A worker's memory marks around training: ``start()`` just before set-up, ``fields()``
    right after training.

    Attributes:
      rss_before_kib: ``VmRSS`` at the start.
      startup_peak_kib: ``VmHWM`` at the start, read before the reset (the start-up's peak).
      reset: whether the peak mark could be reset (else no training peak is reported).
    """

    rss_before_kib: int | None
    startup_peak_kib: int | None
    reset: bool

    @classmethod
    def start(cls) -> TrainingMemory:
        """Reads the RSS and the start-up's peak, then resets the peak mark."""
        rss, peak = status_kib("VmRSS"), status_kib("VmHWM")
        return cls(rss, peak, reset_peak_rss())

    def fields(self) -> dict[str, float | None]:
        """``memory_fields`` now: the peak since ``start()`` when the mark was reset."""
        return memory_fields(self.rss_before_kib,
                             status_kib("VmHWM") if self.reset else None,
                             self.startup_peak_kib)


def worker_env(threads: int) -> dict[str, str]:
    """The environment of a worker process: this one's, the thread caps, no inductor cache,
    and the repository root first on ``PYTHONPATH`` (so ``benchmarks`` and this checkout's
    ``recsys_jax`` import from any working directory)."""
    env = {**os.environ, **thread_environment(threads)}
    # Inductor caches compiled kernels on disk across processes; JAX keeps no persistent cache
    # by default. Disabled, every repetition pays (and reports) a cold torch.compile.
    env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return env


def run_worker_process(task: Mapping[str, Any], work_dir: Path, *, module: str,
                       timeout_s: float | None = None) -> dict[str, Any]:
    """Runs ``python -m <module> TASK.json WORK_DIR`` in a fresh interpreter (cwd: the
    repository root) with the thread environment of ``task["threads"]``; returns the
    ``result.json`` it wrote (arrays it saved stay in ``work_dir``)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    task_path = work_dir / "task.json"
    task_path.write_text(json.dumps(task))
    proc = subprocess.run([sys.executable, "-m", module, str(task_path), str(work_dir)],
                          env=worker_env(int(task["threads"])), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        what = task.get("variant") or task.get("framework")
        raise RuntimeError(f"{module} worker for {what} (seed {task.get('seed')}) failed "
                           f"with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads((work_dir / WORKER_RESULT).read_text())


def write_worker_result(out_dir: str | os.PathLike, result: Any) -> None:
    """A worker's answer to ``run_worker_process``: ``result`` as ``<out_dir>/result.json``
    (plain ``json.dumps``: NaN stays NaN for the reader, which is the same Python)."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / WORKER_RESULT).write_text(json.dumps(result))


def peak_rss_mib() -> float | None:
    """This process's peak RSS so far (``VmHWM``), MiB; ``None`` where /proc has no status.
    Not ``ru_maxrss``: Linux carries it over from the parent across fork and exec."""
    kib = status_kib("VmHWM")
    return None if kib is None else kib / 1024


def training_rows(result: Mapping[str, Any], what: str) -> str:
    """``"N training <what>"`` of a side-by-side result, with the cap when its epochs were
    capped (``num_train``, ``full_num_train``, ``epoch_steps_capped``, ``steps_per_epoch``,
    ``full_steps_per_epoch``)."""
    if not result.get("epoch_steps_capped"):
        return f"{result['num_train']:,} training {what}"
    return (f"{result['full_num_train']:,} training {what}, epochs capped at "
            f"{result['steps_per_epoch']:,} of {result['full_steps_per_epoch']:,} steps (every "
            f"framework trains on the same seeded random {result['num_train']:,} of them)")


# --- Output ---------------------------------------------------------------------------------

def write_json(path: str | os.PathLike, result: Any) -> None:
    """Writes ``result`` as JSON, atomically."""
    from recsys_jax import fileio
    fileio.atomic_write_json(path, result)


def write_results(out_dir: str | os.PathLike, stem: str, result: Any,
                  markdown: str | None = None) -> None:
    """Writes ``<stem>.json`` (and ``<stem>.md``) under ``out_dir``, atomically."""
    from recsys_jax import fileio
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(out / f"{stem}.json", result)
    if markdown is not None:
        fileio.atomic_write_text(out / f"{stem}.md", markdown)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: str | None = None) -> str:
    """A Markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: first
    column left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError("every row and the alignment need one entry per column")
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23×`` (``—`` when either is missing or zero)."""
    return "—" if not a or not b else f"{a / b:.2f}×"


def fmt_mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def main(argv: list[str]) -> int:
    """``python -m benchmarks.harness TASK.json OUT_DIR``: a probe worker that applies the
    task's thread settings and reports them with where it was imported from."""
    if len(argv) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    task = json.loads(Path(argv[1]).read_text())
    settings = set_threads(int(task["threads"]))
    write_worker_result(argv[2], {"environment": settings,
                                  "module_file": str(Path(__file__).resolve()),
                                  "cwd": os.getcwd()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
