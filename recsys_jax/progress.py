"""Progress lines for long loops, through absl logging.

A loop that ends within ``every_s`` seconds prints nothing, so tests and small runs stay quiet;
a longer one logs ``what: done/total (pct), elapsed, ETA`` every ``every_s`` seconds and a
closing line with its total time. ``stage`` is for one long library call (t-SNE, an index
build), which cannot report from inside: it logs the start, and the duration when the call took
``every_s`` or more.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from absl import logging

T = TypeVar("T")

DEFAULT_EVERY_S = 10.0

# absl names the logging call's file and line; skipping these frames makes it name the loop's.
for _function in ("update", "close", "track", "stage"):
    logging.ABSLLogger.register_frame_to_skip(__file__, _function)
for _function in ("__enter__", "__exit__"):
    logging.ABSLLogger.register_frame_to_skip(contextlib.__file__, _function)


class Progress:
    """Counts work done and logs it at most every ``every_s`` seconds.

    Args:
      what: what is being done ("ranking test users").
      total: units of work in all (None: unknown, no percentage or ETA).
      unit: the unit's name, printed after the counts ("users").
      every_s: seconds between lines; quicker loops print nothing.
      log: where lines go (``logging.info``; tests pass a list's append).
      clock: a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, what: str, total: int | None = None, *, unit: str = "",
                 every_s: float = DEFAULT_EVERY_S, log: Callable[[str], None] = logging.info,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self._log, self._clock = log, clock
        self.done = 0
        self.lines = 0
        self._start = self._last = clock()

    def update(self, n: int = 1) -> None:
        """Adds ``n`` units of work done; logs when ``every_s`` has passed since the last line."""
        self.done += n
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self.lines += 1
            self._log(self._line(now))

    def close(self) -> None:
        """Logs the total time, if the loop was long enough to have logged before."""
        if self.lines:
            elapsed = self._clock() - self._start
            self._log(f"{self.what}: {self._count()} done in {elapsed:.1f}s")

    def _count(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.total is None:
            return f"{self.done:,}{unit}"
        return f"{self.done:,}/{self.total:,}{unit}"

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        line = f"{self.what}: {self._count()}"
        if self.total:
            fraction = self.done / self.total
            line += f" ({100 * fraction:.0f}%)"
            if 0 < fraction < 1:
                left = elapsed * (1 - fraction) / fraction
                return line + f", {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        return line + f", {elapsed:.0f}s elapsed"


def track(items: Iterable[T], what: str, *, total: int | None = None, unit: str = "",
          weight: Callable[[T], int] | None = None, every_s: float = DEFAULT_EVERY_S,
          log: Callable[[str], None] = logging.info,
          clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """Yields ``items`` unchanged, logging progress as each one is finished.

    ``weight(item)`` is the units an item counts for (a chunk of users counts its users);
    ``total`` defaults to ``len(items)`` when it has one.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    progress = Progress(what, total, unit=unit, every_s=every_s, log=log, clock=clock)
    for item in items:
        yield item
        progress.update(weight(item) if weight else 1)
    progress.close()


@contextlib.contextmanager
def stage(what: str, *, every_s: float = DEFAULT_EVERY_S,
          log: Callable[[str], None] = logging.info,
          clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Logs ``what`` before a call that may take long and its duration after, when it did.

    The start line is always logged (nothing can print from inside a library call), the
    duration only when the call took ``every_s`` or more.
    """
    log(f"{what}…")
    start = clock()
    yield
    elapsed = clock() - start
    if elapsed >= every_s:
        log(f"{what}: done in {elapsed:.1f}s")
