"""An implicit-feedback experiment (GMF, MLP, NeuMF, dot-product MF) from data to a workdir.

Given ``ImplicitData`` and an experiment config (the fields of ``configs/ncf_ml100k.py``), this
builds the model named in the config (NeuMF optionally initialised from trained GMF and MLP
runs), trains it with ``loop.fit`` on the BCE loss with negatives resampled on the device every
epoch, keeps the epoch with the best validation ranking metric (``training.monitor``, default
full-ranking ``val_ndcg@10``), and evaluates the test part under both protocols of the suite:

* ``full``: every item minus the user's train and validation items, HR/NDCG/Recall/... @{10,100};
* ``sampled-99``: the held-out item among 99 sampled unseen items, HR/NDCG@10 (the NCF paper's
  protocol, only for comparison with published numbers).

Files in ``workdir``:

  config.json, metrics.jsonl, checkpoints/   as for MF (``loop.fit``)
  params.npz            the trained parameters (flat names), read by NeuMF pretraining
  test_metrics.json     both protocols' means, plus run facts and the split fingerprint
  run/                  the model in the suite's run format (``experiments/compare.py``)
  learning_curve.png, report.md
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from recsys_jax import fileio
from recsys_jax.evaluation.evaluate import evaluate_ranking
from recsys_jax.evaluation.results import FULL_PROTOCOL, PerUserMetrics
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.sampled import sampled_candidates
from recsys_jax.models import ncf
from recsys_jax.models.registry import build_model
from recsys_jax.training.curves import plot_learning_curve
from recsys_jax.training.implicit_data import ImplicitData
from recsys_jax.training.implicit_loss import make_bce_loss
from recsys_jax.training.loop import FitConfig, FitResult, fit
from recsys_jax.training.negatives import build_positive_set
from recsys_jax.training.optimizers import make_optimizer
from recsys_jax.training.ranking_sources import RankingValidator, score_matrix, score_source
from recsys_jax.training.rating_experiment import write_config
from recsys_jax.training.steps import steps_per_epoch

PARAMS_FILE = "params.npz"
# Runs of non-dot-product models are saved as dense score matrices up to this many scores
# (1 GiB of float32); larger catalogues are ranked from the model by ScoreFunction only.
MAX_SAVED_SCORES = 1 << 28


def _flat_params(model: nnx.Module) -> tuple[dict[str, np.ndarray], Any, nnx.State]:
    """The model's ``nnx.Param`` arrays by ``/``-joined path, the tree structure, the state."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in leaves}
    return flat, treedef, state


def save_params(model: nnx.Module, path: str | os.PathLike) -> None:
    """Writes the model's ``nnx.Param`` arrays to ``.npz`` (keys are ``/``-joined paths)."""
    flat, _, _ = _flat_params(model)
    with fileio.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **flat)


def load_params(model: nnx.Module, path: str | os.PathLike) -> None:
    """Loads ``save_params`` output into ``model`` in place.

    Raises:
      ValueError: when names or shapes differ from the model's (another architecture).
    """
    flat, treedef, state = _flat_params(model)
    with np.load(path, allow_pickle=False) as npz:
        saved = {name: npz[name] for name in npz.files}
    problems = [f"{n}: only in {'the file' if n in saved else 'the model'}"
                for n in sorted(set(flat) ^ set(saved))]
    problems += [f"{n}: saved {saved[n].shape}, model {v.shape}" for n, v in flat.items()
                 if n in saved and saved[n].shape != v.shape]
    if problems:
        raise ValueError(f"{path} does not fit this model: {problems[:5]}")
    restored = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(saved[n], flat[n].dtype) for n in flat])
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)


def fit_config(config: ml_collections.ConfigDict) -> FitConfig:
    """The loop settings of an NCF config's ``training`` block (ranking metric, ``max``)."""
    t = config.training
    return FitConfig(batch_size=t.batch_size, num_epochs=t.epochs, patience=t.patience,
                     seed=t.seed, monitor=t.monitor, mode="max",
                     data_on_device=t.get("data_on_device", "auto"))


def _monitor_parts(monitor: str) -> tuple[str, int]:
    # "val_ndcg@10" -> ("ndcg", 10)
    if not monitor.startswith("val_") or "@" not in monitor:
        raise ValueError(f"training.monitor must look like 'val_ndcg@10', got {monitor!r}")
    metric, k = monitor[len("val_"):].split("@")
    return metric, int(k)


def load_pretrained_model(workdir: str | os.PathLike, expected_name: str, *,
                          num_users: int, num_items: int,
                          split_fingerprint: str) -> nnx.Module:
    """The trained model of an earlier run in ``workdir`` (its config and ``params.npz``).

    Raises:
      ValueError: when the run trained another model, on another split (its test items could
        have been training data here) or on other id spaces.
    """
    workdir = Path(workdir)
    config = json.loads((workdir / "config.json").read_text())
    facts = json.loads((workdir / "test_metrics.json").read_text())
    if config["model"]["name"] != expected_name:
        raise ValueError(f"{workdir} holds a {config['model']['name']!r} run, not "
                         f"{expected_name!r}")
    if facts["split_fingerprint"] != split_fingerprint:
        raise ValueError(f"{workdir} was trained on another split "
                         f"({facts['split_fingerprint'][:12]}… ≠ {split_fingerprint[:12]}…): "
                         "pretraining on it would leak")
    if (facts["num_users"], facts["num_items"]) != (num_users, num_items):
        raise ValueError(f"{workdir} has {facts['num_users']} users × {facts['num_items']} "
                         f"items, this data {num_users} × {num_items}")
    model = build_model(config["model"], num_users=num_users, num_items=num_items, train={},
                        rngs=nnx.Rngs(0))
    load_params(model, workdir / PARAMS_FILE)
    return model


def build_implicit_model(config: ml_collections.ConfigDict, data: ImplicitData
                         ) -> nnx.Module:
    """The configured model; NeuMF with ``model.pretrained.gmf_workdir``/``mlp_workdir`` set
    starts from those runs' weights (``ncf.load_pretrained``, α = ``pretrained.alpha``)."""
    m = config.model
    model = build_model(m, num_users=data.num_users, num_items=data.num_items,
                        train=data.train, rngs=nnx.Rngs(params=config.training.seed))
    pretrained = m.get("pretrained")
    if m.name == "neumf" and pretrained is not None and pretrained.get("gmf_workdir"):
        facts = dict(num_users=data.num_users, num_items=data.num_items,
                     split_fingerprint=data.split_fingerprint)
        gmf = load_pretrained_model(pretrained.gmf_workdir, "gmf", **facts)
        mlp = load_pretrained_model(pretrained.mlp_workdir, "mlp", **facts)
        ncf.load_pretrained(model, gmf, mlp, alpha=pretrained.get("alpha", 0.5))
        logging.info("NeuMF initialised from %s and %s (alpha %.2f)", pretrained.gmf_workdir,
                     pretrained.mlp_workdir, pretrained.get("alpha", 0.5))
    return model


def train_implicit_model(config: ml_collections.ConfigDict, data: ImplicitData,
                         workdir: str | os.PathLike) -> tuple[nnx.Module, FitResult]:
    """Builds and trains the configured model; returns it at its best validation epoch."""
    t = config.training
    model = build_implicit_model(config, data)
    tx, schedule = make_optimizer(
        config.optimizer, steps_per_epoch=steps_per_epoch(len(data.train["user"]),
                                                          t.batch_size),
        num_epochs=t.epochs)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    positives = build_positive_set(data.train["user"], data.train["item"], data.num_users,
                                   data.num_items, kind=t.get("positive_set", "auto"))
    loss_fn = make_bce_loss(positives, t.num_negatives)
    metric, k = _monitor_parts(t.monitor)
    e = config.evaluation
    validator = RankingValidator(data.target("val"), ks=(k,),
                                 metrics=tuple(dict.fromkeys(("hr", "ndcg", metric))),
                                 protocol=t.get("val_protocol", FULL_PROTOCOL),
                                 num_negatives=e.num_negatives, sample_seed=e.sample_seed)
    result = fit(model, optimizer, loss_fn, data.train, validator, fit_config(config),
                 workdir=workdir, schedule=schedule)
    return model, result


def evaluate_test(model: nnx.Module, data: ImplicitData, config: ml_collections.ConfigDict
                  ) -> dict[str, PerUserMetrics]:
    """Test metrics under the full protocol (``evaluation.ks``) and the sampled protocol
    (``evaluation.sampled_ks``, N = ``evaluation.num_negatives``), keyed by protocol label."""
    e = config.evaluation
    target = data.target("test")
    source = score_source(model)
    full = evaluate_ranking(source, target, tuple(e.ks), protocol=FULL_PROTOCOL)
    candidates = sampled_candidates(target.relevant, target.interacted, e.num_negatives,
                                    e.sample_seed)
    sampled = evaluate_ranking(source, target, tuple(e.sampled_ks), protocol="sampled",
                               candidates=candidates)
    return {full.protocol: full, sampled.protocol: sampled}


def save_ranking_run(model: nnx.Module, directory: str | os.PathLike, *, name: str,
                     model_name: str, data: ImplicitData,
                     metadata: Mapping[str, Any] | None = None) -> Path | None:
    """Writes the model as a run: bias-augmented embeddings for dot-product MF, a dense score
    matrix for the others (``None`` and a warning when that exceeds ``MAX_SAVED_SCORES``)."""
    common = dict(name=name, model=model_name, dataset=data.dataset,
                  split_fingerprint=data.split_fingerprint, split_protocol=data.split_protocol,
                  metadata=dict(metadata or {}))
    if hasattr(model, "ranking_embeddings"):
        users, items = model.ranking_embeddings()
        common["metadata"]["embeddings"] = "bias-augmented [p_u, 1] . [q_i, b_i]"
        return save_run(directory, user_embeddings=users, item_embeddings=items, **common)
    if data.num_users * data.num_items > MAX_SAVED_SCORES:
        logging.warning("not saving a run: %d × %d scores is too large; rank with "
                        "ranking_sources.score_function(model) instead", data.num_users,
                        data.num_items)
        return None
    return save_run(directory, scores=score_matrix(model), **common)


def run_ncf_experiment(config: ml_collections.ConfigDict, data: ImplicitData,
                       workdir: str | os.PathLike, *, run_name: str | None = None,
                       report_sections: Sequence[str] = ()) -> dict[str, Any]:
    """Trains, tests under both protocols, exports and reports (files: module docstring).

    Returns:
      The ``test_metrics.json`` content.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(config, workdir)
    model, result = train_implicit_model(config, data, workdir)
    save_params(model, workdir / PARAMS_FILE)
    results = evaluate_test(model, data, config)
    epoch_times = [r["epoch_time_s"] for r in result.history[1:]] or [
        r["epoch_time_s"] for r in result.history]
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    summary = {
        "model": config.model.name,
        "pretrained": bool(config.model.get("pretrained", {}).get("gmf_workdir")),
        "test": {label: r.summary() for label, r in results.items()},
        "monitor": config.training.monitor,
        "best_epoch": result.best_epoch,
        "best_val": {k: v for k, v in best.items() if k.startswith("val_")},
        "epochs_trained": result.last_epoch,
        "stopped_early": result.stopped_early,
        "compile_time_s": result.compile_time_s,
        "median_epoch_time_s": statistics.median(epoch_times) if epoch_times else None,
        "num_train": int(len(data.train["user"])),
        "num_val": int(len(data.val["user"])),
        "num_test": int(len(data.test["user"])),
        "num_users": data.num_users,
        "num_items": data.num_items,
        "num_parameters": int(sum(np.size(x) for x in jax.tree.leaves(
            nnx.state(model, nnx.Param)))),
        "dataset": data.dataset,
        "split_protocol": data.split_protocol,
        "split_fingerprint": data.split_fingerprint,
    }
    fileio.atomic_write_json(workdir / "test_metrics.json", summary)
    name = run_name or workdir.name
    save_ranking_run(model, workdir / "run", name=name, model_name=config.model.name,
                     data=data, metadata={"config": config.to_dict(),
                                          "test": summary["test"]})
    if result.history:
        plot_learning_curve(result.history, workdir / "learning_curve.png",
                            monitor=config.training.monitor, title=name)
    fileio.atomic_write_text(workdir / "report.md",
                             format_report(config, summary, result, report_sections))
    for label, r in results.items():
        logging.info("test (%s): %s", label, "  ".join(
            f"{k} {r.mean(k):.4f}" for k in r.metric_names if k.startswith(("hr@", "ndcg@"))))
    return summary


def format_report(config: ml_collections.ConfigDict, summary: Mapping[str, Any],
                  result: FitResult, sections: Sequence[str] = ()) -> str:
    """The Markdown of ``report.md``: both protocols' test metrics, setup and training."""
    m, o, t = config.model, config.optimizer, config.training
    lines = [f"# {m.name}{' (pretrained)' if summary['pretrained'] else ''} on "
             f"{summary['dataset']}", ""]
    for label, values in summary["test"].items():
        note = (" — sampled protocol: held-out item among sampled unseen items; not "
                "comparable with full ranking" if label != FULL_PROTOCOL else
                " — all items except the user's train and validation items")
        lines += [f"## Test, protocol `{label}`{note}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in values.items()
                  if k.split("@")[0] in ("hr", "ndcg", "recall", "mrr") and "@" in k]
        lines += [f"| users | {values['num_users']} |", ""]
    epoch_time = summary["median_epoch_time_s"]
    lines += [
        "## Setup", "",
        f"- model: `{m.name}`, dim {m.get('dim', '-')}, MLP layers "
        f"{tuple(m.get('mlp_layers', ())) or '-'}, init std {m.get('init_std', '-')}"
        + (f"; initialised from GMF `{m.pretrained.gmf_workdir}` and MLP "
           f"`{m.pretrained.mlp_workdir}`, α = {m.pretrained.get('alpha', 0.5):g}"
           if summary["pretrained"] else ""),
        f"- loss: binary cross-entropy, {t.num_negatives} negatives per positive resampled "
        "every epoch on the device (never a training positive)",
        f"- optimizer: {o.name}, lr {o.lr:g} ({o.get('schedule', 'constant')}), weight decay "
        f"{o.get('weight_decay', 0.0):g}",
        f"- training: batch {t.batch_size} positives ({t.batch_size * (1 + t.num_negatives)} "
        f"examples), up to {t.epochs} epochs, patience {t.patience} on `{t.monitor}`, "
        f"seed {t.seed}", "",
        "## Training", "",
        f"- best epoch {summary['best_epoch']} of {summary['epochs_trained']}"
        + (" (stopped early)" if summary["stopped_early"] else "")
        + (f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""),
        "- best validation: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                          summary["best_val"].items()),
        f"- compile {summary['compile_time_s']:.2f}s; median epoch "
        + (f"{epoch_time:.2f}s" if epoch_time else "n/a")
        + f"; {summary['num_parameters']:,} parameters", "",
        "![learning curve](learning_curve.png)", "",
    ]
    for section in sections:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)

