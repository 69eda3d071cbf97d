"""The retrieval task: towers trained with an in-batch softmax, served from a FAISS index.

Data: the configured data set, encoded and split; features built from the *training* part only
(``data.features``; validation users are encoded from training-time features, so no held-out
event reaches the model); with ``features.train_user_inputs="causal"`` each training pair is
described by its user's inputs as of just before it: the pair carries its position in the
user-time ordered training events, and the step computes the inputs from the per-event tables
of ``data.causal_events`` (``tasks.pair_inputs``). Training positives: the training events rated
at least ``training.min_rating``. Model: any
``contract.RetrievalEncoder`` (``two_tower`` by default). Loss: in-batch softmax with logQ
correction, accidental-hit removal and optional random negatives (``tasks.retrieval_losses``).
Validation: a full-ranking metric of the suite (``training.monitor``, default
``val_recall@100``). Test: users encoded from train + validation events
(``features.test_user_events``), full ranking, HR/recall/NDCG @ 10/50/100. Then a FAISS index
(``index`` block) with its recall against exact search, and ``Retriever.retrieve`` latency.

Files under the workdir besides ``runner``'s:

  features.npz                                 standardised features + scalers (for serving)
  test_features.npz                            user inputs of the test users (train + val)
  user_embeddings.npy, item_embeddings.npy     exported float32 embeddings (rows = encoded ids)
  index.faiss                                  the FAISS index of the item embeddings
  index.faiss.meta.json                        its sidecar: checksums of the index file and
                                               of item_embeddings.npy, the run's identity
  index.faiss.offset.npy                       the centring offset (centred indexes only)
  run/                                         the run for ``experiments/compare.py``
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from flax import nnx

from recsys_jax import fileio
from recsys_jax.data import columns as columns_lib
from recsys_jax.data import splits
from recsys_jax.data.causal_events import CausalEventTables, build_causal_event_tables
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.features import TwoTowerFeatures, build_two_tower_features
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking, target_from_split
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.sources import Embeddings
from recsys_jax.evaluation.validators import RankingValidator
from recsys_jax.models.contract import RetrievalEncoder
from recsys_jax.retrieval import index as index_lib
from recsys_jax.retrieval.latency import LatencyStats, measure_latency, measure_throughput
from recsys_jax.retrieval.retriever import Retriever
from recsys_jax.tasks.base import Task, TaskData, monitor_parts
from recsys_jax.tasks.data import load_split
from recsys_jax.tasks.fold_in import seen_parts
from recsys_jax.tasks.pair_inputs import pair_inputs_fn
from recsys_jax.tasks.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.training.loop import FitResult
from recsys_jax.training.losses import LossFn

TEST_KS = (10, 50, 100)
TEST_METRICS = ("hr", "recall", "ndcg")
# Test users whose index recall is measured when the config does not say (serving.recall_queries).
RECALL_QUERIES = 10_000


@dataclasses.dataclass
class RetrievalData(TaskData):
    """Encoded data, its split, the training positives (``train``) and the features.

    Attributes:
      encoded: the encoded data set.
      split: the split (encoded ids).
      features: model inputs built from ``split.train`` only (training and validation).
      test_features: the inputs test users are encoded from: ``features`` when
        ``features.test_user_events == "train"``, else rebuilt from train + validation events
        with the scalers fitted on train (the validation items are known when scoring test:
        the suite excludes them from the candidates). Never from test events.
      causal_events: with causal inputs, the per-event tables every pair's inputs are
        computed from (``train_tables`` holds their arrays); None otherwise.

    ``train`` holds ``user``, ``item`` (int32): the training events whose rating is at least
    ``training.min_rating``; with causal inputs also ``event`` (int32), each pair's position in
    ``causal_events``.
    """

    encoded: Dataset | None = None
    split: splits.Split | None = None
    features: TwoTowerFeatures | None = None
    test_features: TwoTowerFeatures | None = None
    causal_events: CausalEventTables | None = None

    def target(self, part: str) -> EvaluationTarget:
        """The evaluation target of ``"val"`` or ``"test"`` (train, + val on test, excluded)."""
        return target_from_split(self.split, self.num_users, self.num_items, part)


def title_embeddings(config: ml_collections.ConfigDict, dataset: Dataset) -> np.ndarray | None:
    """Title vectors per ``config.features`` (None when titles are off)."""
    f = config.features
    if not f.titles:
        return None
    from recsys_jax.data.text_embeddings import encode_titles
    return encode_titles(dataset.items["title"].tolist(), model_name=f.text_model,
                         cache_dir=f.get("cache_dir"))


def prepare_retrieval_data(config: ml_collections.ConfigDict,
                           save_dir: str | Path | None = None) -> RetrievalData:
    """Loads, encodes and splits the data, then builds features from the training part.

    Raises:
      ValueError: when the split fails its leakage checks or no positive is left.
    """
    loaded = load_split(config, save_dir)
    encoded, mapping, split = loaded.encoded, loaded.mapping, loaded.split
    history = bool(config.model.get("history", False))
    build = functools.partial(
        build_two_tower_features, users=encoded.users, items=encoded.items,
        genre_names=encoded.genre_names, num_users=mapping.num_users,
        title_embeddings=title_embeddings(config, encoded),
        use_demographics=config.features.demographics,
        activity=config.features.get("activity", False),
        history_len=config.features.history_len if history else 0)
    features = build(split.train)
    test_events = config.features.get("test_user_events", "train+val")
    if test_events == "train":
        test_features = features
    elif test_events == "train+val":
        test_features = build(pd.concat([split.train, split.val], ignore_index=True),
                              scalers=(features.user_scaler, features.item_scaler))
    else:
        raise ValueError(f"features.test_user_events must be 'train' or 'train+val', got "
                         f"{test_events!r}")
    keep = (split.train["rating"] >= config.training.min_rating).to_numpy()
    if not keep.any():
        raise ValueError(f"no training event has rating >= {config.training.min_rating}")
    users = split.train["user_id"].to_numpy()[keep]
    items = split.train["item_id"].to_numpy()[keep]
    columns_lib.check_id_range(users, mapping.num_users, "user")
    columns_lib.check_id_range(items, mapping.num_items, "item")
    positives = {"user": users.astype(np.int32), "item": items.astype(np.int32)}
    causal_events = None
    train_inputs = config.features.get("train_user_inputs", "all_train")
    if train_inputs == "causal":
        causal_events, position = build_causal_event_tables(
            split.train, features, users=encoded.users, items=encoded.items,
            genre_names=encoded.genre_names, num_users=mapping.num_users,
            use_demographics=config.features.demographics,
            activity=config.features.get("activity", False))
        positives["event"] = position[keep]
    elif train_inputs != "all_train":
        raise ValueError(f"features.train_user_inputs must be 'causal' or 'all_train', got "
                         f"{train_inputs!r}")
    if save_dir is not None:
        features.save(Path(save_dir) / "features.npz")
    return RetrievalData(
        train=positives, num_users=mapping.num_users, num_items=mapping.num_items,
        dataset=encoded.name, split_protocol=split.protocol,
        split_fingerprint=split.fingerprint(), report_section=loaded.section(),
        train_tables=causal_events.arrays() if causal_events is not None else {},
        encoded=encoded, split=split, features=features, test_features=test_features,
        causal_events=causal_events)


def index_identity(config: ml_collections.ConfigDict, data: RetrievalData) -> dict[str, Any]:
    """The run facts recorded in the index sidecar (``load_index(..., identity=)`` compares
    them): model, data set, split protocol and fingerprint."""
    return {"model": config.model.name, "dataset": data.dataset,
            "split_protocol": data.split_protocol, "split_fingerprint": data.split_fingerprint}


def recall_sample(users: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """The users whose index recall is measured: all of ``users`` when there are at most
    ``size``, else a seeded sample of ``size`` of them without repetition (sorted)."""
    users = np.asarray(users)
    if len(users) <= size:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size, replace=False))


def time_retrieval(retriever: Retriever, users: np.ndarray, k: int, *, num_queries: int,
                   batch_size: int, seed: int = 0) -> tuple[LatencyStats, float]:
    """Single-query latency of ``retrieve(user_id, k)`` and batched queries per second."""
    rng = np.random.default_rng(seed)
    queries = rng.choice(users, num_queries, replace=True)
    latency = measure_latency(lambda u: retriever.retrieve(int(u), k), list(queries))
    batches = [queries[i:i + batch_size] for i in range(0, len(queries) - batch_size + 1,
                                                         batch_size)] or [queries]
    qps = measure_throughput(lambda b: retriever.retrieve(b, k), batches, len(batches[0]))
    return latency, qps


class RetrievalTask(Task):
    """Retrieval: see the module docstring."""

    name = "retrieval"
    model_protocol = RetrievalEncoder
    default_monitor = "val_recall@100"

    def prepare(self, config: ml_collections.ConfigDict, workdir: Path | None
                ) -> RetrievalData:
        return prepare_retrieval_data(config, workdir)

    def model_inputs(self, config: ml_collections.ConfigDict, data: RetrievalData
                     ) -> dict[str, Any]:
        return {"features": data.features}

    def loss(self, config: ml_collections.ConfigDict, data: RetrievalData) -> LossFn:
        loss_cfg = config.loss
        return make_retrieval_loss(
            num_items=data.num_items,
            item_log_q=(sampling_log_q(data.train["item"], data.num_items) if loss_cfg.logq
                        else None),
            remove_accidental_hits=loss_cfg.remove_accidental_hits,
            num_random_negatives=loss_cfg.num_random_negatives,
            pair_inputs=(pair_inputs_fn(data.causal_events) if data.causal_events is not None
                         else None))

    def validator(self, config: ml_collections.ConfigDict, data: RetrievalData
                  ) -> RankingValidator:
        metric, k = monitor_parts(self.monitor(config))
        return RankingValidator(data.target("val"), ks=(k,), metrics=(metric,))

    def evaluate(self, config: ml_collections.ConfigDict, data: RetrievalData,
                 model: nnx.Module) -> dict[str, Any]:
        """Test metrics with the users encoded from ``data.test_features`` (the model keeps
        those inputs afterwards: it is saved and served as of the end of validation)."""
        model.set_user_inputs(data.test_features)
        users, items = model.ranking_embeddings()
        test = evaluate_ranking(Embeddings(users, items), data.target("test"), TEST_KS,
                                metrics=TEST_METRICS)
        return {**{f"test_{k}": v for k, v in test.summary().items()},
                "temperature": float(model.temperature),
                "test_user_inputs": config.features.get("test_user_events", "train+val")}

    def export(self, config: ml_collections.ConfigDict, data: RetrievalData,
               model: nnx.Module, workdir: Path, summary: Mapping[str, Any]) -> dict[str, Any]:
        data.test_features.save(workdir / "test_features.npz")
        users, items = model.ranking_embeddings()
        fileio.atomic_save_npy(workdir / "user_embeddings.npy", users)
        fileio.atomic_save_npy(workdir / "item_embeddings.npy", items)
        save_run(workdir / "run", name=config.get("run_name") or workdir.name,
                 model=config.model.name, dataset=data.dataset,
                 # Test users are encoded from these parts' events (features.test_user_events).
                 seen_parts=seen_parts(summary["test_user_inputs"]),
                 split_fingerprint=data.split_fingerprint, split_protocol=data.split_protocol,
                 user_embeddings=users, item_embeddings=items, similarity="dot",
                 metadata={"config": config.to_dict(), "best_epoch": summary.get("best_epoch"),
                           "user_features": "test users: " + summary["test_user_inputs"]
                           + " events"})
        return self._index_and_serve(config, data, model, users, items, workdir)

    @staticmethod
    def _index_and_serve(config: ml_collections.ConfigDict, data: RetrievalData,
                         model: nnx.Module, users: np.ndarray, items: np.ndarray,
                         workdir: Path) -> dict[str, Any]:
        """Builds and saves the FAISS index of ``items``, its recall@100 against exact search
        (over ``serving.recall_queries`` test users at most, their rows of ``users``: the
        model's ``ranking_embeddings``, encoded once by ``export``), and the latency of
        ``Retriever.retrieve`` for the test users."""
        index_config = index_lib.IndexConfig(**config.index.to_dict())
        t0 = time.perf_counter()
        index = index_lib.build_index(items, index_config)
        build_s = time.perf_counter() - t0
        index_lib.save_index(index, workdir / "index.faiss", items=items,
                             identity=index_identity(config, data))
        target = data.target("test")
        s = config.serving
        recall_users = recall_sample(target.users, s.get("recall_queries", RECALL_QUERIES),
                                     seed=config.training.seed)
        exact = index_lib.build_index(items, index_lib.IndexConfig("flat"))
        queries = users[recall_users]
        recall = index_lib.recall_at_k(index_lib.search(index, queries, 100)[1],
                                       index_lib.search(exact, queries, 100)[1])
        # Serving the test users: their seen items are those the suite excludes (train + val).
        retriever = Retriever(model, index, user_scaler=data.features.user_scaler,
                              seen=target.exclude)
        latency, qps = time_retrieval(retriever, target.users, 100, num_queries=s.num_queries,
                                      batch_size=s.batch_size, seed=config.training.seed)
        return {"index": {"kind": index_config.label(), "build_s": build_s,
                          "recall@100_vs_exact": recall,
                          "recall_queries": len(recall_users),
                          "memory_bytes": index_lib.index_memory_bytes(index)},
                "retrieve_latency_ms": latency.to_dict(), "retrieve_batched_qps": qps,
                "retrieve_batch_size": s.batch_size}

    def report_sections(self, config: ml_collections.ConfigDict, data: RetrievalData,
                        model: nnx.Module, summary: Mapping[str, Any],
                        workdir: Path | None) -> list[str]:
        m, loss_cfg = config.model, config.loss
        rows = [f"| {metric}@{k} | {summary[f'test_{metric}@{k}']:.4f} |"
                for k in TEST_KS for metric in TEST_METRICS]
        setup = [
            "## Setup", "",
            f"- towers: hidden {m.get('hidden_dim', '-')}, output {m.get('dim', '-')}, history "
            f"pooling {m.get('history', False)}, id embeddings user {m.get('user_id_dim', 0)} / "
            f"item {m.get('item_id_dim', 0)}; user features {len(data.features.user_names)}, "
            f"item features {len(data.features.item_names)}",
            f"- loss: in-batch softmax, logQ {loss_cfg.logq}, accidental-hit removal "
            f"{loss_cfg.remove_accidental_hits}, random negatives "
            f"{loss_cfg.num_random_negatives}; "
            f"final temperature {summary['temperature']:.4f}",
            f"- training: {len(data.train['user']):,} positives (rating >= "
            f"{config.training.min_rating}); test users encoded from "
            f"{summary['test_user_inputs']} events",
        ]
        if "index" in summary:
            lat = summary["retrieve_latency_ms"]
            setup += [
                f"- index: {summary['index']['kind']}, recall@100 vs exact "
                f"{summary['index']['recall@100_vs_exact']:.4f} (over "
                f"{summary['index']['recall_queries']} test users), "
                f"{summary['index']['memory_bytes'] / 2**20:.1f} MiB",
                f"- retrieve(user id, k=100): p50 {lat['p50_ms']:.2f} ms, p95 "
                f"{lat['p95_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms over {lat['n']} queries; "
                f"batched {summary['retrieve_batched_qps']:,.0f} queries/s (batch "
                f"{summary['retrieve_batch_size']})"]
        return ["\n".join([
            "Full ranking over the catalogue, training (and, on test, validation) items "
            "excluded.", "", "| metric | test |", "|---|---|", *rows]),
            "\n".join(setup), data.report_section]

    def headline(self, summary: Mapping[str, Any]) -> str:
        line = (f"test HR@100 {summary['test_hr@100']:.4f}  HR@10 {summary['test_hr@10']:.4f}"
                f"  recall@100 {summary['test_recall@100']:.4f}  NDCG@100 "
                f"{summary['test_ndcg@100']:.4f}")
        if "retrieve_latency_ms" in summary:
            lat = summary["retrieve_latency_ms"]
            line += (f"; retrieve(k=100) {summary['index']['kind']}: p50 {lat['p50_ms']:.2f} ms"
                     f"  p99 {lat['p99_ms']:.2f} ms; batched "
                     f"{summary['retrieve_batched_qps']:,.0f} queries/s")
        return line


def train_two_tower(config: ml_collections.ConfigDict, data: RetrievalData,
                    workdir: str | Path | None) -> tuple[nnx.Module, FitResult]:
    """Builds and trains the model on prepared data (benchmarks); returns it at its best
    validation epoch. ``workdir=None`` writes nothing."""
    from recsys_jax.tasks.runner import fit_model
    task = RetrievalTask()
    model = task.build_model(config, data)
    return model, fit_model(task, config, data, model,
                            None if workdir is None else Path(workdir))
