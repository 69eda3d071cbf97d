"""One run per workdir: an exclusive OS file lock, released by the kernel when the process dies.

``WorkdirLock(workdir, process_index)`` takes a non-blocking ``fcntl.flock`` on
``<workdir>/lock.<process_index>``. A second run on the same workdir fails at once with
``WorkdirLocked``, naming the workdir and the holder (pid, host, start time, which the holder
writes into its lock file). The kernel drops the lock when the holder exits, however it ends
(SIGKILL included), so a crashed run never leaves a stale lock; the file itself stays (removing
it would let two processes lock two different files of one name).

A run of several cooperating processes holds one lock per process index
(``jax.process_index()``), all under the run's one identity (``run_identity``).

``flock`` is advisory and local to one machine's kernel; on network file systems that do not
forward it, two machines are not kept apart.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

from recsys_jax.tasks.run_identity import WorkdirError

LOCK_PREFIX = "lock."


class WorkdirLocked(WorkdirError):
    """Another process holds the workdir's lock."""


def lock_path(workdir: str | os.PathLike, process_index: int = 0) -> Path:
    """The lock file of process ``process_index`` in ``workdir``."""
    return Path(workdir) / f"{LOCK_PREFIX}{process_index}"


class WorkdirLock:
    """An exclusive lock on a workdir for one process of a run; a context manager.

    Args:
      workdir: the run directory (must exist).
      process_index: this process's index in a multi-process run (0 otherwise).
    """

    def __init__(self, workdir: str | os.PathLike, process_index: int = 0):
        self.workdir = Path(workdir)
        self.path = lock_path(workdir, process_index)
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        """Takes the lock without waiting.

        Raises:
          WorkdirLocked: when another process (or another lock object) holds it.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WorkdirLocked(
                f"{self.workdir} is in use by another run ({self._holder()}): one run per "
                f"workdir. Wait for it to finish, or use another --workdir.") from None
        except BaseException:
            os.close(fd)
            raise
        # Written into the locked file itself (replacing it would lose the lock's identity).
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.datetime.now().isoformat(timespec="seconds")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder + "\n").encode(), 0)
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return f"holder unknown; it has {self.path} locked"  # Still being written.

    def release(self) -> None:
        """Releases the lock (closing the file releases it; idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
