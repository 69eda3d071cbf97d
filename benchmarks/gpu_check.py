r"""The device check: the project's benchmarks on one GPU machine in a few minutes, one report.

Usage (from the repository root; ``benchmarks/gpu_check.sh`` first installs carried wheels and
points the data cache at the carried ML-100K):
  python -m benchmarks.gpu_check --output_dir=workdirs/gpu_check            # on a GPU
  python -m benchmarks.gpu_check --smoke --output_dir=/tmp/gpu_check_smoke  # tiny, any CPU

Runs, in this order, each as its own process with a time limit (``PARTS``):

1. ``environment``: JAX's backend and devices, PyTorch's CUDA device, FAISS's GPUs;
2. ``torch_vs_jax_mf``, ``torch_vs_jax_two_tower``: ``benchmarks.torch_vs_jax`` on ML-100K
   (``configs/mf_ml100k.py``, ``configs/two_tower_ml100k.py`` without titles), one repetition,
   PyTorch on ``--torch_device`` (``cuda``), no ``torch.compile``;
3. ``eval_throughput``: full ranking of every user at ML-20M's shape
   (``benchmarks.eval_throughput``);
4. ``retrieval``: FAISS flat / IVF / HNSW over a synthetic catalogue
   (``benchmarks.retrieval_indexes``; on the GPU when FAISS sees one, ``IndexConfig.use_gpu``);
5. ``scale_mf``, ``scale_two_tower``: the scale benchmark's ML-20M-shaped epochs of
   ``mf_lazy_adam`` and ``two_tower_id_history`` (``benchmarks.scale``, epochs capped by
   ``--max_epoch_steps``).

The parts share one budget (``--budget_s``): each gets at most its own cap and never more than
what is left, so time a part does not use goes to the next ones; a part that runs out is
stopped (its whole process group) and recorded as ``timed_out`` with what it had written (the
scale benchmark writes after every cell). A failed part does not stop the others.

``--smoke`` runs every part at tiny shapes (``configs/*_tiny.py``, the scale shape ``tiny``,
small catalogues) with PyTorch on the CPU: a check that the script works, on any machine.

Writes ``gpu_check.json`` (per part: status, seconds, the command, its own JSON result and the
end of its log) and ``gpu_check.md`` (a status table, then each part's Markdown) to
``--output_dir``, after every part.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import app, flags

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]

# The ML-20M shape of the scale benchmark (benchmarks.scale_shapes.SHAPES["ml20m"]) for the
# evaluation benchmark: users × items × dim, and about as many excluded items per user.
ML20M_EVAL = ("--sizes=138493x26744x64", "--train_per_user=115")


@dataclasses.dataclass(frozen=True)
class Part:
    """One benchmark run of the check.

    Attributes:
      name: its key in the report.
      args: ``python -m`` arguments on a GPU; ``{out}`` is the part's output folder,
        ``{device}`` the PyTorch device.
      smoke_args: the same at tiny shapes.
      cap_s: the most seconds it may take (less when the budget has less left).
      results: files (under ``{out}``) holding its JSON result and Markdown, if any.
    """

    name: str
    args: tuple[str, ...]
    smoke_args: tuple[str, ...]
    cap_s: float
    results: tuple[str, ...] = ()


_TT_CONFIG = ("--config.features.titles=False",)  # No text model on an offline machine.
PARTS = (
    Part("environment", ("benchmarks.gpu_check", "--part=environment", "--output_dir={out}"),
         ("benchmarks.gpu_check", "--part=environment", "--output_dir={out}"), 60,
         ("environment.json",)),
    Part("torch_vs_jax_mf",
         ("benchmarks.torch_vs_jax", "--models=mf", "--config=configs/mf_ml100k.py",
          "--repetitions=1", "--epochs=10", "--torch_compile=false", "--device={device}",
          "--bootstrap_resamples=200", "--output_dir={out}"),
         ("benchmarks.torch_vs_jax", "--models=mf", "--config=configs/mf_tiny.py",
          "--repetitions=1", "--torch_compile=false", "--device={device}",
          "--bootstrap_resamples=200", "--output_dir={out}"), 90,
         ("benchmark_mf.json", "benchmark_mf.md")),
    Part("torch_vs_jax_two_tower",
         ("benchmarks.torch_vs_jax", "--models=two_tower",
          "--config=configs/two_tower_ml100k.py", *_TT_CONFIG, "--repetitions=1", "--epochs=5",
          "--torch_compile=false", "--device={device}", "--bootstrap_resamples=200",
          "--output_dir={out}"),
         ("benchmarks.torch_vs_jax", "--models=two_tower", "--config=configs/two_tower_tiny.py",
          "--repetitions=1", "--torch_compile=false", "--device={device}",
          "--bootstrap_resamples=200", "--output_dir={out}"), 100,
         ("benchmark_two_tower.json", "benchmark_two_tower.md")),
    Part("eval_throughput",
         ("benchmarks.eval_throughput", *ML20M_EVAL, "--k=10,50,100", "--repeats=2",
          "--output={out}/eval_throughput.json"),
         ("benchmarks.eval_throughput", "--sizes=943x1682x64", "--k=10,100", "--repeats=1",
          "--output={out}/eval_throughput.json"), 60,
         ("eval_throughput.json",)),
    Part("retrieval",
         ("benchmarks.retrieval_indexes", "--ml100k_workdir=", "--num_items=200000",
          "--num_users=20000", "--num_interactions=1000000", "--epochs=1",
          "--nprobe=16,64", "--ef_search=128", "--num_queries=300", "--output_dir={out}"),
         ("benchmarks.retrieval_indexes", "--ml100k_workdir=", "--num_items=2000",
          "--num_users=300", "--num_interactions=10000", "--epochs=1", "--nprobe=8",
          "--ef_search=64", "--num_queries=50", "--output_dir={out}"), 90,
         ("benchmark.json", "benchmark.md")),
    Part("scale_mf",
         ("benchmarks.scale", "--shapes=ml20m", "--workloads=mf_lazy_adam", "--epochs=2",
          "--max_epoch_steps=2000", "--output_dir={out}"),
         ("benchmarks.scale", "--shapes=tiny", "--workloads=mf_lazy_adam", "--epochs=2",
          "--output_dir={out}"), 150,
         ("scale.json", "scale.md")),
    Part("scale_two_tower",
         ("benchmarks.scale", "--shapes=ml20m", "--workloads=two_tower_id_history",
          "--epochs=2", "--max_epoch_steps=300", "--output_dir={out}"),
         ("benchmarks.scale", "--shapes=tiny", "--workloads=two_tower_id_history",
          "--epochs=2", "--output_dir={out}"), 600,
         ("scale.json", "scale.md")),
)


def define_flags() -> None:
    """The script's flags; defined when it runs, not on import (the tests import this module
    beside other benchmarks that have flags of the same names)."""
    flags.DEFINE_string("output_dir", os.environ.get("OUT") or "workdirs/gpu_check",
                        "Where gpu_check.json and gpu_check.md go (default: $OUT).")
    flags.DEFINE_bool("smoke", False, "Tiny shapes, PyTorch on the CPU: any machine.")
    flags.DEFINE_float("budget_s", None,
                       "Seconds for all parts together (default: 450, with --smoke 420).")
    flags.DEFINE_list("parts", None, f"Parts to run (default: all of {[p.name for p in PARTS]}).")
    flags.DEFINE_enum("torch_device", None, ["cpu", "cuda"],
                      "PyTorch's device (default: cuda, with --smoke cpu).")
    flags.DEFINE_enum("part", None, ["environment"], "Internal: run one in-process part.")


def plan(part: Part, budget_s: float, elapsed_s: float) -> float:
    """Seconds ``part`` may take: its cap, or what the budget has left if less."""
    return max(0.0, min(part.cap_s, budget_s - elapsed_s))


def part_command(part: Part, out: Path, *, smoke: bool, torch_device: str) -> list[str]:
    """The part's command line (``python -m ...``)."""
    args = part.smoke_args if smoke else part.args
    return [sys.executable, "-m", *(a.format(out=out, device=torch_device) for a in args)]


def run_part(part: Part, out: Path, timeout_s: float, *, smoke: bool, torch_device: str,
             env: dict[str, str]) -> dict[str, Any]:
    """Runs ``part`` in its own process group for at most ``timeout_s``; returns its record:
    ``status`` (``ok``, ``failed``, ``timed_out``, ``skipped``), ``seconds``, ``command``,
    ``returncode``, the JSON of its result files, its Markdown and the end of its log."""
    out.mkdir(parents=True, exist_ok=True)
    command = part_command(part, out, smoke=smoke, torch_device=torch_device)
    record: dict[str, Any] = {"command": shlex.join(command[2:]), "timeout_s": timeout_s}
    if timeout_s <= 0:
        return {**record, "status": "skipped", "seconds": 0.0}
    log = out / "log.txt"
    t0 = time.perf_counter()
    with log.open("w") as f:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                   stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=timeout_s)
            status = "ok" if process.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # Its workers too.
            process.wait()
            status = "timed_out"
    record.update(status=status, seconds=time.perf_counter() - t0,
                  returncode=process.returncode)
    for name in part.results:
        path = out / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            try:
                record.setdefault("results", {})[name] = json.loads(path.read_text())
            except ValueError:
                record.setdefault("results", {})[name] = None
        else:
            record["markdown"] = path.read_text()
    record["log_tail"] = log.read_text(errors="replace")[-3000:]
    return record


def format_report(report: dict[str, Any]) -> str:
    """``gpu_check.md``: the setting, a status table, then each part's Markdown."""
    env = report.get("parts", {}).get("environment", {}).get("results", {}).get(
        "environment.json") or {}
    lines = ["# Device check", "",
             f"`{report['command']}` ({'smoke: tiny shapes' if report['smoke'] else 'full'}; "
             f"PyTorch on `{report['torch_device']}`; budget {report['budget_s']:.0f} s, "
             f"used {report['elapsed_s']:.0f} s)", ""]
    if env:
        lines += [f"JAX {env.get('jax')} on `{env.get('jax_backend')}` "
                  f"({', '.join(env.get('jax_devices', []))}); PyTorch {env.get('torch')} "
                  f"(CUDA device: {env.get('torch_cuda_device')}); FAISS {env.get('faiss')} "
                  f"({env.get('faiss_gpus')} GPU(s)).", ""]
    lines += ["| part | status | seconds | command |", "|---|---|---:|---|"]
    for name, part in report["parts"].items():
        lines.append(f"| {name} | {part['status']} | {part['seconds']:.1f} | "
                     f"`{part['command']}` |")
    for name, part in report["parts"].items():
        if part.get("markdown"):
            lines += ["", f"## {name}", "", part["markdown"].rstrip()]
        elif name == "eval_throughput" and part.get("results", {}).get("eval_throughput.json"):
            lines += ["", f"## {name}", "", "```",
                      json.dumps(part["results"]["eval_throughput.json"]["results"], indent=1),
                      "```"]
    return "\n".join(lines) + "\n"


def environment_facts() -> dict[str, Any]:
    """JAX's backend and devices, PyTorch's version and CUDA device, FAISS's GPUs."""
    import jax
    facts: dict[str, Any] = {"jax": jax.__version__, "jax_backend": jax.default_backend(),
                             "jax_devices": [str(d) for d in jax.devices()],
                             "python": sys.version.split()[0]}
    try:
        import torch
        facts["torch"] = torch.__version__
        facts["torch_cuda_device"] = (torch.cuda.get_device_name(0)
                                      if torch.cuda.is_available() else None)
    except ImportError:
        facts["torch"] = None
    try:
        import faiss
        facts["faiss"] = faiss.__version__
        facts["faiss_gpus"] = faiss.get_num_gpus()
    except ImportError:
        facts["faiss"] = None
    return facts


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    output_dir = Path(flags.FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if flags.FLAGS.part == "environment":
        (output_dir / "environment.json").write_text(json.dumps(environment_facts(), indent=1))
        return
    smoke = flags.FLAGS.smoke
    budget = flags.FLAGS.budget_s or (420.0 if smoke else 450.0)
    torch_device = flags.FLAGS.torch_device or ("cpu" if smoke else "cuda")
    wanted = flags.FLAGS.parts or [p.name for p in PARTS]
    unknown = set(wanted) - {p.name for p in PARTS}
    if unknown:
        raise app.UsageError(f"unknown parts {sorted(unknown)}; known: {[p.name for p in PARTS]}")
    parts = [p for p in PARTS if p.name in wanted]
    # Workers start and stop JAX many times: grow GPU memory as needed instead of taking 75%
    # of it in every process (an orchestrator's share would starve its workers).
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    report = {"command": "python -m benchmarks.gpu_check " + shlex.join(sys.argv[1:]),
              "smoke": smoke, "torch_device": torch_device, "budget_s": budget,
              "elapsed_s": 0.0, "parts": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for part in parts:
            timeout = plan(part, budget, time.perf_counter() - start)
            print(f"[gpu_check] {part.name}: up to {timeout:.0f} s", flush=True)
            record = run_part(part, Path(scratch) / part.name, timeout, smoke=smoke,
                              torch_device=torch_device, env=env)
            print(f"[gpu_check] {part.name}: {record['status']} in {record['seconds']:.1f} s",
                  flush=True)
            report["parts"][part.name] = record
            report["elapsed_s"] = time.perf_counter() - start
            harness.write_results(output_dir, "gpu_check", report, format_report(report))
    print(format_report(report))
    if any(p["status"] != "ok" for p in report["parts"].values()):
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
