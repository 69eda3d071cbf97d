"""Running a ``benchmarks`` script end to end from the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(name: str, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m benchmarks.<name> <flags>`` with the repository root as working directory
    and first on the path (this checkout's packages, also for the workers it spawns)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
