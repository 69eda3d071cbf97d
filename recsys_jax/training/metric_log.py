"""Per-epoch metric records: ``metrics.jsonl`` and TensorBoard event files.

``metrics.jsonl`` is the record the library reads back (resume, curves, ``read_metrics``);
the TensorBoard events under ``tensorboard/`` are for people (``tensorboard --logdir
<workdir>``), written with tensorboardX so no TensorFlow is needed. On resume both are cut back
to the epoch the run restarts after: the JSON lines are rewritten, the event file is opened with
``purge_step`` so TensorBoard hides the stale epochs. TensorBoard tags allow only
``[A-Za-z0-9_./-]``, so ``val_recall@100`` is logged as ``val_recall_at_100`` (``tensorboard_tag``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recsys_jax import fileio

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def tensorboard_tag(name: str) -> str:
    """A metric name as a legal TensorBoard tag: ``@`` becomes ``_at_``, other characters
    outside ``[A-Za-z0-9_./-]`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_./\-]", "_", name.replace("@", "_at_"))


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (skipping a torn last line), or ``[]``."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricLog:
    """Appends one record per epoch to ``metrics.jsonl`` and to TensorBoard.

    Args:
      workdir: the run directory.
      keep_up_to: epochs after this one (logged by an interrupted run that resumes from
        ``keep_up_to``) are dropped; 0 starts afresh.
      tensorboard: also write TensorBoard events.
    """

    def __init__(self, workdir: str | os.PathLike, *, keep_up_to: int = 0,
                 tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.history = [r for r in read_metrics(self.workdir) if r.get("epoch", 0) <= keep_up_to]
        fileio.atomic_write_text(self.workdir / METRICS_FILE,
                                 "".join(json.dumps(r) + "\n" for r in self.history))
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # Imported here: only runs that log need it.
            self._writer = SummaryWriter(str(self.workdir / TENSORBOARD_DIR),
                                         purge_step=keep_up_to + 1)

    def write(self, record: Mapping[str, Any]) -> None:
        """Logs one epoch's record (its ``epoch`` is the TensorBoard step)."""
        self.history.append(dict(record))
        with open(self.workdir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._writer is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and name != "epoch":
                    self._writer.add_scalar(tensorboard_tag(name), value,
                                            global_step=record["epoch"])
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
