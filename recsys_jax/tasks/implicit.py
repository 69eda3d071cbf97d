"""The implicit task: positives only; GMF, MLP, NeuMF, dot-product MF or any pair scorer.

Data: ratings become positives (all, or those ≥ ``implicit.min_rating``, thresholded before
the split, so held-out items are positives too), split by the data layer (``leave_one_out`` for
the NCF protocol). Model: any ``contract.PairScorer`` (the score is a logit). Loss
(``training.loss``): ``bce`` (pointwise: binary cross-entropy on each positive and
``num_negatives`` sampled negatives) or ``bpr`` (pairwise: −log σ(s⁺ − s⁻)); negatives are
resampled on the device every step, never a training positive (``tasks.negatives``);
``training.l2_reg`` > 0 adds the per-pair L2 of the rows read (``contract.RowRegularized``;
``tasks.implicit_losses``).
Validation: a full-ranking metric (``training.monitor``, default ``val_ndcg@10``). Test, by
default after the validation positives are folded in (``tasks.fold_in``;
``evaluation.test_user_inputs``), under both protocols of the suite:

* ``full``: every item minus the user's train and validation items, HR/NDCG/Recall/... @{10,100};
* ``sampled-99``: the held-out item among 99 sampled unseen items, HR/NDCG@10 (the NCF paper's
  protocol, only for comparison with published numbers).

NeuMF with ``model.pretrained.gmf_workdir``/``mlp_workdir`` starts from those runs' saved
models (``model/``), which must come from the same split (else their training would leak).

Files under the workdir besides ``runner``'s: ``run/`` (bias-augmented embeddings for a
``RankingEmbedder``, else a dense score matrix up to ``MAX_SAVED_SCORES``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from absl import logging
from flax import nnx

from recsys_jax.data import splits
from recsys_jax.data.columns import Columns, check_id_range, num_rows
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking, target_from_split
from recsys_jax.evaluation.results import FULL_PROTOCOL, PerUserMetrics
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.sampled import sampled_candidates
from recsys_jax.evaluation.validators import RankingValidator, score_matrix, score_source
from recsys_jax.models import ncf
from recsys_jax.models.contract import PairScorer, RankingEmbedder, RowRegularized, require
from recsys_jax.models.registry import load_model, read_model_info
from recsys_jax.tasks.base import Task, TaskData, monitor_parts
from recsys_jax.tasks.data import load_split
from recsys_jax.tasks.fold_in import describe, fold_in_for_test, seen_parts
from recsys_jax.tasks.implicit_losses import IMPLICIT_LOSSES
from recsys_jax.tasks.negatives import build_positive_set
from recsys_jax.training.losses import LossFn

# Runs of non-dot-product models are saved as dense score matrices up to this many scores
# (1 GiB of float32); larger catalogues are ranked from the model by ScoreFunction only.
MAX_SAVED_SCORES = 1 << 28


def implicit_interactions(interactions: pd.DataFrame,
                          min_rating: float | None = None) -> pd.DataFrame:
    """The interactions kept as positives: all, or those rated at least ``min_rating``."""
    if min_rating is None:
        return interactions
    return interactions[interactions["rating"] >= min_rating].reset_index(drop=True)


def interaction_columns(users: np.ndarray, items: np.ndarray, *, num_users: int,
                        num_items: int) -> Columns:
    """Validated ``{"user": int32, "item": int32}`` positive columns."""
    check_id_range(np.asarray(users), num_users, "user")
    check_id_range(np.asarray(items), num_items, "item")
    columns = {"user": np.asarray(users, np.int32), "item": np.asarray(items, np.int32)}
    num_rows(columns)
    return columns


@dataclasses.dataclass
class ImplicitData(TaskData):
    """Encoded, split positive interactions (``train`` from ``TaskData``).

    Attributes:
      val, test: columns ``user``, ``item`` (int32).
      split: the data layer's ``Split`` (evaluation targets are built from it).
      timestamps: each part's event times, aligned with its columns (empty when the data
        set has none); kept out of the columns the gradient loop carries, read by models
        fitted without gradients (``events``).
    """

    val: Columns = dataclasses.field(default_factory=dict)
    test: Columns = dataclasses.field(default_factory=dict)
    split: splits.Split | None = None
    timestamps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def events(self, part: str) -> Columns:
        """The columns of ``part`` (``"train"`` or ``"val"``) plus ``timestamp`` when the
        data has times."""
        columns = dict(getattr(self, part))
        if part in self.timestamps:
            columns["timestamp"] = self.timestamps[part]
        return columns

    def target(self, part: str) -> EvaluationTarget:
        """The evaluation target of ``part`` (``"val"`` excludes train items from ranking,
        ``"test"`` train and val items)."""
        return target_from_split(self.split, self.num_users, self.num_items, part)

    @classmethod
    def from_split(cls, split: splits.Split, *, num_users: int, num_items: int,
                   dataset: str = "", report_section: str = "") -> ImplicitData:
        """Columns of every part of ``split`` (frames with ``user_id`` / ``item_id``)."""
        cols = {name: interaction_columns(part["user_id"].to_numpy(),
                                          part["item_id"].to_numpy(), num_users=num_users,
                                          num_items=num_items)
                for name, part in split.parts().items()}
        times = {name: part["timestamp"].to_numpy() for name, part in split.parts().items()
                 if "timestamp" in part.columns}
        return cls(**cols, num_users=num_users, num_items=num_items, split=split,
                   timestamps=times,
                   dataset=dataset, split_protocol=split.protocol,
                   split_fingerprint=split.fingerprint(), report_section=report_section)


def load_implicit_data(config: ml_collections.ConfigDict,
                       save_dir: str | Path | None = None) -> ImplicitData:
    """Loads, encodes, thresholds and splits the data of ``config`` (``ids/`` and ``split/``
    saved into ``save_dir`` when given).

    Raises:
      ValueError: when the split fails its leakage checks.
    """
    min_rating = config.get("implicit", {}).get("min_rating")
    loaded = load_split(config, save_dir,
                        keep=lambda frame: implicit_interactions(frame, min_rating))
    total = len(loaded.encoded.interactions)
    positives = sum(len(part) for part in loaded.split.parts().values())
    kept = "all ratings" if min_rating is None else f"ratings ≥ {min_rating:g}"
    return ImplicitData.from_split(
        loaded.split, num_users=loaded.mapping.num_users, num_items=loaded.mapping.num_items,
        dataset=loaded.dataset.name,
        report_section=loaded.section(f"- positives: {kept} ({positives:,} of {total:,})\n"))


def load_pretrained_model(workdir: str | Path, expected_name: str, *, num_users: int,
                          num_items: int, split_fingerprint: str) -> nnx.Module:
    """The trained model of an earlier run in ``workdir`` (its ``model/``).

    Raises:
      ValueError: when the run trained another model, on another split (its test items could
        have been training data here) or on other id spaces.
    """
    directory = Path(workdir) / "model"
    info = read_model_info(directory)
    if info["name"] != expected_name:
        raise ValueError(f"{workdir} holds a {info['name']!r} run, not {expected_name!r}")
    fingerprint = info["metadata"].get("split_fingerprint", "")
    if fingerprint != split_fingerprint:
        raise ValueError(f"{workdir} was trained on another split ({fingerprint[:12]}… ≠ "
                         f"{split_fingerprint[:12]}…): pretraining on it would leak")
    if (info["num_users"], info["num_items"]) != (num_users, num_items):
        raise ValueError(f"{workdir} has {info['num_users']} users × {info['num_items']} "
                         f"items, this data {num_users} × {num_items}")
    return load_model(directory)


class ImplicitTask(Task):
    """Implicit feedback: see the module docstring."""

    name = "implicit"
    model_protocol = PairScorer
    default_monitor = "val_ndcg@10"

    def prepare(self, config: ml_collections.ConfigDict, workdir: Path | None
                ) -> ImplicitData:
        return load_implicit_data(config, workdir)

    def build_model(self, config: ml_collections.ConfigDict, data: ImplicitData
                    ) -> nnx.Module:
        """The configured model; NeuMF with ``model.pretrained.gmf_workdir``/``mlp_workdir``
        set starts from those runs' weights (``ncf.load_pretrained``, α = ``alpha``)."""
        model = super().build_model(config, data)
        if config.training.get("l2_reg", 0.0) > 0:
            require(model, RowRegularized, "training.l2_reg > 0")
        pretrained = config.model.get("pretrained")
        if config.model.name == "neumf" and pretrained is not None \
                and pretrained.get("gmf_workdir"):
            facts = dict(num_users=data.num_users, num_items=data.num_items,
                         split_fingerprint=data.split_fingerprint)
            gmf = load_pretrained_model(pretrained.gmf_workdir, "gmf", **facts)
            mlp = load_pretrained_model(pretrained.mlp_workdir, "mlp", **facts)
            alpha = pretrained.get("alpha", 0.5)
            ncf.load_pretrained(model, gmf, mlp, alpha=alpha)
            logging.info("NeuMF initialised from %s and %s (alpha %.2f)",
                         pretrained.gmf_workdir, pretrained.mlp_workdir, alpha)
        return model

    def fit_columns(self, data: ImplicitData) -> Columns:
        """Training columns with their timestamps (recency-weighted item-item rows)."""
        return data.events("train")

    def loss(self, config: ml_collections.ConfigDict, data: ImplicitData) -> LossFn:
        t = config.training
        name = t.get("loss", "bce")
        if name not in IMPLICIT_LOSSES:
            raise ValueError(f"training.loss must be one of {sorted(IMPLICIT_LOSSES)} for the "
                             f"implicit task, got {name!r}")
        return self._loss_avoiding(config, data, (data.train,))

    @staticmethod
    def _loss_avoiding(config: ml_collections.ConfigDict, data: ImplicitData,
                       parts: tuple[Columns, ...]) -> LossFn:
        """The configured loss whose negatives are never a positive of ``parts``."""
        t = config.training
        users = np.concatenate([p["user"] for p in parts])
        items = np.concatenate([p["item"] for p in parts])
        positives = build_positive_set(users, items, data.num_users, data.num_items,
                                       kind=t.get("positive_set", "auto"))
        return IMPLICIT_LOSSES[t.get("loss", "bce")](positives, t.num_negatives,
                                                      l2_reg=t.get("l2_reg", 0.0))

    def validator(self, config: ml_collections.ConfigDict, data: ImplicitData
                  ) -> RankingValidator:
        metric, k = monitor_parts(self.monitor(config))
        e = config.evaluation
        return RankingValidator(data.target("val"), ks=(k,),
                                metrics=tuple(dict.fromkeys(("hr", "ndcg", metric))),
                                protocol=config.training.get("val_protocol", FULL_PROTOCOL),
                                num_negatives=e.num_negatives, sample_seed=e.sample_seed)

    def test_results(self, config: ml_collections.ConfigDict, data: ImplicitData,
                     model: nnx.Module) -> dict[str, PerUserMetrics]:
        """Per-user test metrics under both protocols (``ranking_test_results``)."""
        return ranking_test_results(config, data.target("test"), model)

    def evaluate(self, config: ml_collections.ConfigDict, data: ImplicitData,
                 model: nnx.Module) -> dict[str, Any]:
        """Test metrics after folding in the validation positives (``tasks.fold_in``; in
        place, negatives never a train or val positive) unless
        ``evaluation.test_user_inputs="train"``."""
        inputs = fold_in_for_test(
            config, model, data.train, data.val,
            lambda columns: self._loss_avoiding(config, data, (data.train, data.val)),
            events=(data.events("train"), data.events("val")))
        results = self.test_results(config, data, model)
        pretrained = config.model.get("pretrained")
        return {"test": {label: r.summary() for label, r in results.items()}, **inputs,
                "pretrained": bool(pretrained and pretrained.get("gmf_workdir")),
                "num_val": len(data.val["user"]), "num_test": len(data.test["user"])}

    def export(self, config: ml_collections.ConfigDict, data: ImplicitData, model: nnx.Module,
               workdir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
        save_ranking_run(model, workdir / "run", name=config.get("run_name") or workdir.name,
                         model_name=config.model.name, data=data,
                         seen_parts=seen_parts(summary["test_user_inputs"]),
                         metadata={"config": config.to_dict(), "test": summary["test"]})
        return {}

    def report_sections(self, config: ml_collections.ConfigDict, data: ImplicitData,
                        model: nnx.Module, summary: Mapping[str, Any],
                        workdir: Path | None) -> list[str]:
        sections = ranking_test_sections(summary)
        m, t = config.model, config.training
        sections.append("\n".join([
            "## Model and loss", "",
            f"- model: `{m.name}`, dim {m.get('dim', '-')}, MLP layers "
            f"{tuple(m.get('mlp_layers', ())) or '-'}, init std {m.get('init_std', '-')}"
            + (f"; initialised from GMF `{m.pretrained.gmf_workdir}` and MLP "
               f"`{m.pretrained.mlp_workdir}`, α = {m.pretrained.get('alpha', 0.5):g}"
               if summary["pretrained"] else ""),
            f"- loss: {t.get('loss', 'bce')}"
            + (f" + {t.l2_reg:g} × row L2" if t.get("l2_reg", 0.0) > 0 else "")
            + f", {t.num_negatives} negatives per positive "
            "resampled every step on the device (never a training positive); batch "
            f"{t.batch_size} positives", describe(summary)]))
        sections.append(data.report_section)
        return sections

    def headline(self, summary: Mapping[str, Any]) -> str:
        return ranking_test_headline(summary)


def ranking_test_results(config: ml_collections.ConfigDict, target: EvaluationTarget,
                         model: Any) -> dict[str, PerUserMetrics]:
    """Per-user test metrics of ``model`` (a ``RankingEmbedder`` or ``PairScorer``) under
    the full protocol (``evaluation.ks``) and the sampled protocol
    (``evaluation.sampled_ks``, N = ``evaluation.num_negatives``), by protocol label."""
    e = config.evaluation
    source = score_source(model)
    full = evaluate_ranking(source, target, tuple(e.ks), protocol=FULL_PROTOCOL)
    candidates = sampled_candidates(target.relevant, target.interacted, e.num_negatives,
                                    e.sample_seed)
    sampled = evaluate_ranking(source, target, tuple(e.sampled_ks), protocol="sampled",
                               candidates=candidates)
    return {full.protocol: full, sampled.protocol: sampled}


def ranking_test_sections(summary: Mapping[str, Any]) -> list[str]:
    """One ``report.md`` table per test protocol in ``summary["test"]``."""
    sections = []
    for label, values in summary["test"].items():
        note = (" — sampled protocol: held-out item among sampled unseen items; not "
                "comparable with full ranking" if label != FULL_PROTOCOL else
                " — all items except the user's train and validation items")
        lines = [f"## Test, protocol `{label}`{note}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in values.items()
                  if k.split("@")[0] in ("hr", "ndcg", "recall", "mrr") and "@" in k]
        lines += [f"| users | {values['num_users']} |"]
        sections.append("\n".join(lines))
    return sections


def ranking_test_headline(summary: Mapping[str, Any]) -> str:
    """The console line of ``summary["test"]``: HR, NDCG and recall per protocol."""
    return "; ".join(f"test ({label}): " + "  ".join(
        f"{k} {v:.4f}" for k, v in values.items()
        if isinstance(v, float) and k.split("@")[0] in ("hr", "ndcg", "recall"))
        for label, values in summary["test"].items())


def save_ranking_run(model: nnx.Module, directory: str | Path, *, name: str,
                     model_name: str, data: TaskData,
                     seen_parts: tuple[str, ...] = ("train",),
                     metadata: Mapping[str, Any] | None = None) -> Path | None:
    """Writes the model as a run: a ``RankingEmbedder``'s embeddings, else a dense score
    matrix (``None`` and a warning when that exceeds ``MAX_SAVED_SCORES``). ``seen_parts``:
    the parts the user side was fitted on (``("train", "val")`` after fold-in)."""
    common = dict(name=name, model=model_name, dataset=data.dataset, seen_parts=seen_parts,
                  split_fingerprint=data.split_fingerprint, split_protocol=data.split_protocol,
                  metadata=dict(metadata or {}))
    if isinstance(model, RankingEmbedder):
        users, items = model.ranking_embeddings()
        common["metadata"]["embeddings"] = "the model's ranking_embeddings()"
        return save_run(directory, user_embeddings=users, item_embeddings=items, **common)
    if data.num_users * data.num_items > MAX_SAVED_SCORES:
        logging.warning("not saving a run: %d × %d scores is too large; rank with "
                        "evaluation.validators.score_function(model) instead", data.num_users,
                        data.num_items)
        return None
    return save_run(directory, scores=score_matrix(model), **common)
