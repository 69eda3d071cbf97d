"""The early-stopping rule shared by ``loop.fit`` and the PyTorch baseline's fits.

Imports neither JAX nor torch, so the baseline's PyTorch workers can use it without starting
JAX (which would add its threads and memory to the process being measured).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class EarlyStopping:
    """Tracks the best value of the monitored metric and epochs since it improved."""

    patience: int
    mode: str = "min"
    min_delta: float = 0.0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Records ``value`` for ``epoch``; returns whether it is a new best."""
        if self.best_value is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best_value - self.min_delta
        else:
            improved = value > self.best_value + self.min_delta
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without improvement."""
        return self.patience > 0 and self.bad_epochs >= self.patience
