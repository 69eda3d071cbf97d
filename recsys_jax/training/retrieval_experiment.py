"""A two-tower retrieval experiment from a config to a finished workdir.

Steps: load, encode and split the data (``rating_data.load_dataset``, ``splits.make_split``);
build features from the *training* part only (``data.features``; validation and test users are
encoded from their training-time features, so no held-out event reaches the model; with
``features.train_user_inputs="causal"`` each training pair also carries its user's inputs as of
just before it, ``data.features.CausalUserInputs``); train with the shared ``loop.fit`` on the in-batch softmax (``retrieval_losses``), early-stopping on
validation recall@K from the evaluation suite's full ranking; export the embeddings; evaluate the
test part; build and save a FAISS index; time ``Retriever.retrieve``.

Files under ``workdir``:

  config.json, metrics.jsonl, checkpoints/     as for MF (``loop.fit``)
  ids/, split/                                 id mapping, split with its leakage report
  features.npz                                 standardised features + scalers (for serving)
  test_features.npz                            user inputs of the test users (train + val)
  two_tower.json, two_tower_params.npz         the trained towers (``models.two_tower``)
  user_embeddings.npy, item_embeddings.npy     exported float32 embeddings (rows = encoded ids)
  index.faiss                                  the FAISS index of the item embeddings
  run/                                         the run for ``experiments/compare.py``
  test_metrics.json, learning_curve.png, report.md
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from absl import logging
from flax import nnx

from recsys_jax import fileio
from recsys_jax.data import ids, splits
from recsys_jax.data.dataset import Dataset
from recsys_jax.data.features import (TwoTowerFeatures, build_causal_user_inputs,
                                      build_two_tower_features)
from recsys_jax.evaluation.evaluate import EvaluationTarget, evaluate_ranking, target_from_split
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.sources import Embeddings
from recsys_jax.models.registry import build_model
from recsys_jax.models.two_tower import save_two_tower
from recsys_jax.retrieval import index as index_lib
from recsys_jax.retrieval.latency import LatencyStats, measure_latency, measure_throughput
from recsys_jax.retrieval.retriever import Retriever
from recsys_jax.training import columns as columns_lib
from recsys_jax.training.curves import plot_learning_curve
from recsys_jax.training.loop import FitConfig, FitResult, fit
from recsys_jax.training.optimizers import make_optimizer
from recsys_jax.training.rating_data import load_dataset, split_from_config
from recsys_jax.training.rating_experiment import write_config
from recsys_jax.training.retrieval_evaluate import RankingEvaluator
from recsys_jax.training.retrieval_losses import make_retrieval_loss, sampling_log_q
from recsys_jax.training.steps import steps_per_epoch

TEST_KS = (10, 50, 100)
TEST_METRICS = ("hr", "recall", "ndcg")


@dataclasses.dataclass(frozen=True)
class RetrievalData:
    """Encoded data, its split, the training positives and the features.

    Attributes:
      dataset: the encoded data set.
      split: the split (encoded ids).
      positives: training columns ``user``, ``item`` (int32): the training events whose rating
        is at least ``training.min_rating``; with causal inputs also ``user_features`` and,
        with the history tower, ``history_ids``/``history_mask`` (one row per pair).
      features: model inputs built from ``split.train`` only (training and validation).
      test_features: the inputs test users are encoded from: ``features`` when
        ``features.test_user_events == "train"``, else rebuilt from train + validation events
        with the scalers fitted on train (the validation items are known when scoring test:
        the suite excludes them from the candidates). Never from test events.
    """

    dataset: Dataset
    split: splits.Split
    positives: dict[str, np.ndarray]
    features: TwoTowerFeatures
    test_features: TwoTowerFeatures

    @property
    def num_users(self) -> int:
        return int(self.features.user.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.features.item.shape[0])

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
                           save_dir: str | os.PathLike | None = None) -> RetrievalData:
    """Loads, encodes and splits the data, then builds features from the training part.

    Raises:
      ValueError: when the split fails its leakage checks or no positive is left.
    """
    encoded, mapping = ids.encode_dataset(load_dataset(config.data))
    split = split_from_config(encoded.interactions, config.split)
    build = functools.partial(
        build_two_tower_features, users=encoded.users, items=encoded.items,
        genre_names=encoded.genre_names, num_users=mapping.num_users,
        title_embeddings=title_embeddings(config, encoded),
        use_demographics=config.features.demographics,
        activity=config.features.get("activity", False),
        history_len=config.features.history_len if config.model.history else 0)
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
    train_inputs = config.features.get("train_user_inputs", "all_train")
    if train_inputs == "causal":
        inputs = build_causal_user_inputs(
            split.train, features, users=encoded.users, items=encoded.items,
            genre_names=encoded.genre_names, num_users=mapping.num_users,
            use_demographics=config.features.demographics,
            activity=config.features.get("activity", False)).subset(keep)
        positives["user_features"] = inputs.user
        if config.model.history:
            positives["history_ids"] = inputs.history_ids
            positives["history_mask"] = inputs.history_mask
    elif train_inputs != "all_train":
        raise ValueError(f"features.train_user_inputs must be 'causal' or 'all_train', got "
                         f"{train_inputs!r}")
    if save_dir is not None:
        mapping.save(os.path.join(save_dir, "ids"))
        split.save(os.path.join(save_dir, "split"))
        features.save(os.path.join(save_dir, "features.npz"))
    return RetrievalData(dataset=encoded, split=split, positives=positives,
                         features=features, test_features=test_features)


def monitor_name(config: ml_collections.ConfigDict) -> str:
    """The validation metric early stopping follows, e.g. ``val_recall@100``."""
    return f"val_{config.training.monitor_metric}@{config.training.monitor_k}"


def train_two_tower(config: ml_collections.ConfigDict, data: RetrievalData,
                    workdir: str | os.PathLike) -> tuple[nnx.Module, FitResult]:
    """Builds and trains the model; returns it at its best validation epoch."""
    t, l = config.training, config.loss
    model = build_model(config.model, num_users=data.num_users, num_items=data.num_items,
                        train=data.positives, rngs=nnx.Rngs(params=t.seed),
                        features=data.features)
    tx, schedule = make_optimizer(
        config.optimizer, steps_per_epoch=steps_per_epoch(len(data.positives["user"]),
                                                          t.batch_size),
        num_epochs=t.epochs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    loss_fn = make_retrieval_loss(
        num_items=data.num_items,
        item_log_q=sampling_log_q(data.positives["item"], data.num_items) if l.logq else None,
        remove_accidental_hits=l.remove_accidental_hits,
        num_random_negatives=l.num_random_negatives)
    evaluator = RankingEvaluator(data.target("val"), (t.monitor_k,),
                                 metrics=(t.monitor_metric,), prefix="val")
    fit_config = FitConfig(batch_size=t.batch_size, num_epochs=t.epochs, patience=t.patience,
                           seed=t.seed, monitor=monitor_name(config), mode="max",
                           data_on_device=t.get("data_on_device", "auto"))
    result = fit(model, optimizer, loss_fn, data.positives, evaluator, fit_config,
                 workdir=workdir, schedule=schedule)
    return model, result


def use_test_inputs(model: nnx.Module, features: TwoTowerFeatures) -> None:
    """Points the model's user inputs (features, histories) at ``features`` (same shapes)."""
    model.user_features[...] = features.user
    if model.use_history:
        model.history_ids[...] = features.history_ids
        model.history_mask[...] = features.history_mask


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


def run_two_tower_experiment(config: ml_collections.ConfigDict,
                             workdir: str | os.PathLike) -> dict[str, Any]:
    """Trains, exports, evaluates, indexes and times; see the module docstring for the files.

    Returns:
      The contents of ``test_metrics.json``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
    data = prepare_retrieval_data(config, save_dir=workdir)
    model, result = train_two_tower(config, data, workdir)

    save_two_tower(model, workdir)
    data.test_features.save(workdir / "test_features.npz")
    use_test_inputs(model, data.test_features)
    arrays = model.export_arrays()
    for name, array in arrays.items():
        fileio.atomic_save_npy(workdir / f"{name}.npy", array)
    test_target = data.target("test")
    test = evaluate_ranking(Embeddings(arrays["user_embeddings"], arrays["item_embeddings"]),
                            test_target, TEST_KS, metrics=TEST_METRICS)
    name = config.get("run_name") or workdir.name
    save_run(workdir / "run", name=name, model=config.model.name, dataset=data.dataset.name,
             split_fingerprint=data.split.fingerprint(), split_protocol=data.split.protocol,
             user_embeddings=arrays["user_embeddings"],
             item_embeddings=arrays["item_embeddings"], similarity="dot",
             metadata={"config": config.to_dict(), "best_epoch": result.best_epoch,
                       "user_features": "test users: " + config.features.get(
                           "test_user_events", "train+val") + " events"})

    index_config = index_lib.IndexConfig(**config.index.to_dict())
    t0 = time.perf_counter()
    index = index_lib.build_index(arrays["item_embeddings"], index_config)
    build_s = time.perf_counter() - t0
    index_lib.save_index(index, workdir / "index.faiss")
    test_users = test_target.users
    exact = index_lib.build_index(arrays["item_embeddings"], index_lib.IndexConfig("flat"))
    queries = arrays["user_embeddings"][test_users]
    recall = index_lib.recall_at_k(index_lib.search(index, queries, 100)[1],
                                   index_lib.search(exact, queries, 100)[1])
    # Serving the test users: their seen items are those the suite excludes (train + val).
    retriever = Retriever(model, index, user_scaler=data.features.user_scaler,
                          seen=test_target.exclude)
    s = config.serving
    latency, qps = time_retrieval(retriever, test_users, 100, num_queries=s.num_queries,
                                  batch_size=s.batch_size, seed=config.training.seed)

    epoch_times = [r["epoch_time_s"] for r in result.history]
    summary = {
        **{f"test_{k}": v for k, v in test.summary().items()},
        "best_epoch": result.best_epoch,
        monitor_name(config): result.best_value,
        "epochs_trained": result.last_epoch,
        "stopped_early": result.stopped_early,
        "compile_time_s": result.compile_time_s,
        "median_epoch_time_s": statistics.median(epoch_times) if epoch_times else None,
        "temperature": float(model.temperature),
        "num_positives": int(len(data.positives["user"])),
        "num_users": data.num_users, "num_items": data.num_items,
        "split_protocol": data.split.protocol,
        "index": {"kind": index_config.label(), "build_s": build_s,
                  "recall@100_vs_exact": recall,
                  "memory_bytes": index_lib.index_memory_bytes(index)},
        "retrieve_latency_ms": latency.to_dict(),
        "retrieve_batched_qps": qps,
        "retrieve_batch_size": s.batch_size,
    }
    fileio.atomic_write_json(workdir / "test_metrics.json", summary)
    if result.history:
        plot_learning_curve(result.history, workdir / "learning_curve.png",
                            monitor=monitor_name(config), title=f"two-tower, {name}")
    fileio.atomic_write_text(workdir / "report.md", format_report(config, summary, data))
    logging.info("test HR@100 %.4f, recall@100 %.4f; retrieve p99 %.2f ms; outputs in %s",
                 summary["test_hr@100"], summary["test_recall@100"], latency.p99_ms, workdir)
    return summary


def format_report(config: ml_collections.ConfigDict, summary: dict[str, Any],
                  data: RetrievalData) -> str:
    """The Markdown of ``report.md``."""
    m, l, t = config.model, config.loss, config.training
    lat = summary["retrieve_latency_ms"]
    rows = [f"| {metric}@{k} | {summary[f'test_{metric}@{k}']:.4f} |"
            for k in TEST_KS for metric in TEST_METRICS]
    return "\n".join([
        f"# two-tower on {data.dataset.name}, `{data.split.protocol}`",
        "",
        "Full ranking over the catalogue, training (and, on test, validation) items excluded.",
        "",
        "| metric | test |", "|---|---|", *rows,
        "",
        "## Setup",
        "",
        f"- towers: hidden {m.hidden_dim}, output {m.dim}, history pooling {m.history}, "
        f"id embeddings user {m.user_id_dim} / item {m.item_id_dim}; "
        f"user features {len(data.features.user_names)}, item features "
        f"{len(data.features.item_names)}",
        f"- loss: in-batch softmax, logQ {l.logq}, accidental-hit removal "
        f"{l.remove_accidental_hits}, random negatives {l.num_random_negatives}; "
        f"final temperature {summary['temperature']:.4f}",
        f"- training: {summary['num_positives']:,} positives (rating >= {t.min_rating}), batch "
        f"{t.batch_size}, best epoch {summary['best_epoch']} of {summary['epochs_trained']}, "
        f"median epoch {summary['median_epoch_time_s'] or float('nan'):.2f}s",
        f"- index: {summary['index']['kind']}, recall@100 vs exact "
        f"{summary['index']['recall@100_vs_exact']:.4f}, "
        f"{summary['index']['memory_bytes'] / 2**20:.1f} MiB",
        f"- retrieve(user id, k=100): p50 {lat['p50_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
        f"p99 {lat['p99_ms']:.2f} ms over {lat['n']} queries; batched "
        f"{summary['retrieve_batched_qps']:,.0f} queries/s (batch "
        f"{summary['retrieve_batch_size']})",
        "",
        "![learning curve](learning_curve.png)",
        "",
    ])
