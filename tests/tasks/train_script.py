"""Running ``experiments/train.py`` end to end from the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_train(config_name: str, workdir: Path, *overrides: str,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """``python experiments/train.py --config=configs/<config_name>.py --workdir=<workdir>
    <overrides>`` from ``workdir``'s parent, with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "train.py"),
         f"--config={REPO / 'configs' / f'{config_name}.py'}", f"--workdir={workdir}",
         *overrides],
        cwd=workdir.parent, env=env, capture_output=True, text=True, timeout=timeout)
