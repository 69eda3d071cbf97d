"""Per-epoch ranking validation of an embedding model with the evaluation suite.

The model exports its user and item embeddings (``export_arrays``), which go through the suite's
full ranking (``evaluation.evaluate.evaluate_ranking``) with the target's exclusions, so the
metric the loop early-stops on is computed exactly as the reported test metrics are.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx

from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking
from recsys_jax.evaluation.sources import Embeddings


class RankingEvaluator:
    """``model -> {"<prefix>_<metric>@<K>": mean}`` under full ranking on a fixed target."""

    def __init__(self, target: EvaluationTarget, ks: Sequence[int] = (100,), *,
                 metrics: Sequence[str] = ("hr", "recall", "ndcg"), prefix: str = "val",
                 similarity: str = "dot"):
        """
        Args:
          target: what to rank for (``evaluation.evaluate.target_from_arrays``).
          ks: cut-offs.
          metrics: ranking metrics of ``evaluation.metrics.RANKING_METRICS``.
          prefix: name prefix of the returned metrics.
          similarity: how the exported embeddings are compared (``"dot"`` or ``"cosine"``).
        """
        self.target, self.ks, self.metrics = target, tuple(ks), tuple(metrics)
        self.prefix, self.similarity = prefix, similarity

    def __call__(self, model: nnx.Module) -> dict[str, float]:
        arrays = model.export_arrays()
        result = evaluate_ranking(
            Embeddings(arrays["user_embeddings"], arrays["item_embeddings"], self.similarity),
            self.target, self.ks, metrics=self.metrics)
        return {f"{self.prefix}_{name}": result.mean(name) for name in result.metric_names
                if name.split("@")[0] in self.metrics}
