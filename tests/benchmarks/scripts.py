"""Running an ``experiments/`` script end to end from the baseline tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_experiment(script: str, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python experiments/<script> <flags>`` from the repository root, this checkout's
    packages first on the path (the workers it spawns import them too)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / script), *flags],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
