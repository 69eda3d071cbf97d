"""Per-user metric values: what every metric returns and every summary is computed from."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

FULL_PROTOCOL = "full"


def sampled_protocol_label(num_negatives: int) -> str:
    """The label carried by every output of the sampled protocol, e.g. ``"sampled-99"``."""
    return f"sampled-{int(num_negatives)}"


@dataclasses.dataclass(frozen=True)
class PerUserMetrics:
    """Metric values per evaluated user.

    Attributes:
      users: ids of the evaluated users (ascending), the users with a non-empty relevant set.
      values: metric name (``"ndcg@10"``, ``"novelty@10"``, ``"rmse"``, ...) → float64 array
        aligned with ``users``. A value is NaN only where the metric is undefined for that user
        (e.g. intra-list diversity of a list with fewer than two items); summaries skip NaNs
        and report how many values they used.
      num_skipped: users left out because their relevant set is empty.
      protocol: ``"full"`` or ``"sampled-<N>"``; the label travels into every output.
      aggregates: list-set metrics that have no per-user value (catalogue coverage, Gini).
    """

    users: np.ndarray
    values: dict[str, np.ndarray]
    num_skipped: int = 0
    protocol: str = FULL_PROTOCOL
    aggregates: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name, v in self.values.items():
            if v.shape != self.users.shape:
                raise ValueError(f"metric {name!r} has {v.shape} values for "
                                 f"{self.users.shape} users")

    @property
    def metric_names(self) -> list[str]:
        """Per-user metric names, in insertion order."""
        return list(self.values)

    def mean(self, name: str) -> float:
        """Mean of a per-user metric over the users where it is defined (NaN when none)."""
        v = self.values[name]
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else float("nan")

    def summary(self) -> dict[str, Any]:
        """Means, counts and aggregates as a flat JSON-ready dict."""
        out: dict[str, Any] = {"protocol": self.protocol, "num_users": len(self.users),
                               "num_skipped_users": int(self.num_skipped)}
        for name, v in self.values.items():
            out[name] = self.mean(name)
            defined = int((~np.isnan(v)).sum())
            if defined != len(v):
                out[f"{name}_num_users"] = defined
        out.update({k: float(v) for k, v in self.aggregates.items()})
        return out

    def merged(self, other: PerUserMetrics) -> PerUserMetrics:
        """This result with ``other``'s metrics added (same users and protocol required)."""
        if not np.array_equal(self.users, other.users) or self.protocol != other.protocol:
            raise ValueError("can only merge metrics of the same users and protocol")
        return dataclasses.replace(self, values={**self.values, **other.values},
                                   aggregates={**self.aggregates, **other.aggregates})
