"""The learning-curve plot drawn from ``metrics.jsonl`` records."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from recsys_jax import fileio


def plot_learning_curve(history: Sequence[dict[str, Any]], path: str | os.PathLike, *,
                        monitor: str = "val_rmse", title: str = "") -> None:
    """Writes a PNG: training loss (left) and the validation metrics (right) per epoch, with
    the best epoch of ``monitor`` marked."""
    import matplotlib
    matplotlib.use("Agg")  # Files only; never needs a display.
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no epochs to plot")
    epochs = [r["epoch"] for r in history]
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_train.plot(epochs, [r["train_loss"] for r in history], marker=".", label="train loss")
    ax_train.set_xlabel("epoch")
    ax_train.set_ylabel("loss")
    ax_train.legend()
    val_keys = [k for k in history[0] if k.startswith("val_") or k == monitor]
    for k in val_keys:
        ax_val.plot(epochs, [r.get(k) for r in history], marker=".", label=k)
    # The loop flags each epoch that improved the monitor; the last such epoch is the best.
    improved = [r for r in history if r.get("improved") and monitor in r]
    if improved:
        best = improved[-1]
        ax_val.axvline(best["epoch"], color="grey", linestyle="--", linewidth=1)
        ax_val.annotate(f"best {monitor} {best[monitor]:.4f} (epoch {best['epoch']})",
                        (best["epoch"], best[monitor]), textcoords="offset points",
                        xytext=(5, 10), fontsize=8)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation metric")
    ax_val.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with fileio.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
