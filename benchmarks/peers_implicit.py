"""This project's EASE, iALS and ItemKNN beside the `implicit` library's ALS, BPR and ItemKNN.

Every model is fitted on the same split (``--config``'s data and split: by default ML-100K
leave-one-out, configs/ncf_ml100k.py) and scored by this project's evaluator on the test part:
full ranking over every item minus the user's train and val items, HR@10, NDCG@10 and HR@100
with 95% bootstrap CIs, paired t and Wilcoxon tests of each of ours against its `implicit`
counterpart.

Test users, equal information: each model scores test users from their train + val events,
its item side fitted on train only. Ours through the implicit task's fold-in
(``contract.UserRefit``); `implicit`'s ALS through ``partial_fit_users`` (its exact least
squares on the train + val rows, items fixed), its ItemKNN by multiplying train + val rows
with the similarities. `implicit`'s BPR has no user refit: its test users are scored from
train only, and the table says so (``seen``).

Settings: ours from their configs (chosen on validation: docs/models/baselines.md); `implicit`
ALS with the same objective (α, λ of configs/ials_ml100k.py: ``alpha``, ``regularization``;
its unobserved weight is 1 and its λ is not scaled, as ``unobserved_weight=1``,
``reg_exponent=0`` here), factors and iterations (``--factors``, ``--iterations``); BPR and
ItemKNN's K chosen on validation with ``--tune`` (small grids, validation HR@10 with train-only
users), else the flags.

Fit time: the median of ``--repeats`` fits after a first one (which for ours includes XLA's
compilation, reported apart as ``first fit``); `implicit` runs with its native CPU code and
OpenBLAS limited to one thread, as it asks. Measured on whatever machine runs it: say whether
it was quiet.

  python -m benchmarks.peers_implicit --output_dir=workdirs/peers_implicit --tune

With ``--runs_dir``, each `implicit` model's test scores are also written as a run directory
(``<runs_dir>/<model>/``: its factors, or the ItemKNN score matrix, with the parts its test
users have seen) that ``experiments/compare.py --runs`` reads beside this project's runs
(benchmarks/headline_ml100k.sh).

Needs the optional ``peers`` extra (``pip install -e '.[peers]'``: the `implicit` package).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from absl import app, flags, logging

from benchmarks import harness
from recsys_jax.config_files import load_config_file
from recsys_jax.console import quiet_startup
from recsys_jax.evaluation.evaluate import evaluate_ranking
from recsys_jax.evaluation.results import FULL_PROTOCOL, PerUserMetrics
from recsys_jax.evaluation.runs import save_run
from recsys_jax.evaluation.significance import compare_paired, mean_ci
from recsys_jax.evaluation.sources import Embeddings, ScoreFunction, ScoreSource
from recsys_jax.evaluation.validators import score_source
from recsys_jax.tasks.implicit import ImplicitData, load_implicit_data
from recsys_jax.tasks.runner import train_and_evaluate

KS = (10, 100)
METRICS = ("hr@10", "ndcg@10", "hr@100")
OURS = {"EASE": "configs/ease_ml100k.py", "EASE, recency-weighted rows":
        "configs/ease_ml100k.py:recency", "iALS": "configs/ials_ml100k.py",
        "ItemKNN": "configs/item_knn_ml100k.py"}
# Each of ours beside its `implicit` counterpart in the paired tests.
PAIRS = (("iALS", "implicit ALS"), ("ItemKNN", "implicit ItemKNN (cosine)"))
# The grid our iALS was chosen on (experiments/spaces/ials_ml100k.json), in implicit's terms.
ALS_GRID = [(a, r) for a in (1, 2, 5, 10, 20) for r in (0.1, 1, 10, 30, 100)]
BPR_GRID = [(lr, reg) for lr in (0.01, 0.05, 0.1) for reg in (0.001, 0.01)]
KNN_GRID = (50, 100, 200, 400, 800)


@dataclasses.dataclass
class Row:
    """One model's test metrics and timings."""

    name: str
    library: str
    seen: str
    metrics: PerUserMetrics
    fit_s: float
    first_fit_s: float
    settings: dict[str, Any]
    compile_s: float | None = None
    source: ScoreSource | None = None  # the test scores, for ``save_peer_runs``


def binary(columns: Mapping[str, np.ndarray], num_users: int, num_items: int
           ) -> sp.csr_matrix:
    """The 0/1 float32 user × item CSR of event columns (`implicit` takes scipy matrices)."""
    return sp.csr_matrix((np.ones(len(columns["user"]), np.float32),
                          (columns["user"], columns["item"])), shape=(num_users, num_items),
                         dtype=np.float32).tocsr()


def evaluate(source: ScoreSource, data: ImplicitData, part: str = "test") -> PerUserMetrics:
    """This project's full-ranking metrics of ``source`` on ``part``."""
    return evaluate_ranking(source, data.target(part), KS, protocol=FULL_PROTOCOL,
                            metrics=("hr", "ndcg"))


def timed(fit: Callable[[], Any], repeats: int) -> tuple[Any, float, float]:
    """``(last result, median of the repeats, first call)`` seconds."""
    times, result = [], None
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        result = fit()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times[1:] or times), times[0]


def ours(data: ImplicitData, repeats: int) -> list[Row]:
    """Our models through ``train_and_evaluate`` on the prepared data (fold-in included)."""
    rows = []
    for name, spec in OURS.items():
        config = load_config_file(spec)
        if config.model.name == "ials":
            config.model.dim, config.model.iterations = flags.FLAGS.factors, flags.FLAGS.iterations
        fits, compile_s = [], None
        for _ in range(repeats + 1):
            run = train_and_evaluate(config, None, data=data)
            fits.append(run.summary["fit_time_s"])
            if compile_s is None:  # iALS compiles in its first fit only (then cached)
                compile_s = run.summary.get("compile_time_s")
        rows.append(Row(name, "recsys_jax", "train+val", evaluate(score_source(run.model), data),
                        statistics.median(fits[1:] or fits), fits[0],
                        dict(config.model.to_dict()), compile_s))
        logging.info("%s: fit %.2fs (first %.2fs)", name, rows[-1].fit_s, fits[0])
    return rows


def _als(train: sp.csr_matrix, alpha: float, reg: float):
    from implicit.cpu.als import AlternatingLeastSquares
    model = AlternatingLeastSquares(factors=flags.FLAGS.factors, iterations=flags.FLAGS.iterations,
                                    alpha=alpha, regularization=reg, random_state=flags.FLAGS.seed)
    model.fit(train, show_progress=False)
    return model


def _bpr(train: sp.csr_matrix, lr: float, reg: float, iterations: int):
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    model = BayesianPersonalizedRanking(factors=flags.FLAGS.factors, learning_rate=lr,
                                        regularization=reg, iterations=iterations,
                                        random_state=flags.FLAGS.seed)
    model.fit(train, show_progress=False)
    return model


def _knn(train: sp.csr_matrix, k: int):
    from implicit.nearest_neighbours import CosineRecommender
    model = CosineRecommender(K=k)
    model.fit(train, show_progress=False)
    return model


def _knn_scores(model, rows: sp.csr_matrix, num_items: int) -> ScoreFunction:
    similarity = sp.csr_matrix(model.similarity)
    return ScoreFunction(lambda users: np.asarray((rows[users] @ similarity).todense(),
                                                  np.float32), num_items)


def _val_ndcg10(source: ScoreSource, data: ImplicitData) -> float:
    """Validation NDCG@10 with train-only users: what our sweeps choose on."""
    return evaluate(source, data, "val").mean("ndcg@10")


def peers(data: ImplicitData, repeats: int, tune: bool) -> list[Row]:
    """`implicit`'s ALS, BPR and ItemKNN on the same split, test users as described above."""
    from threadpoolctl import threadpool_limits
    n_u, n_i = data.num_users, data.num_items
    train = binary(data.train, n_u, n_i)
    val_users = np.unique(data.val["user"])
    train_val = binary({k: np.r_[data.train[k], data.val[k]] for k in ("user", "item")},
                       n_u, n_i)
    ials = load_config_file(OURS["iALS"]).model
    alpha, reg = float(ials.alpha), float(ials.l2)
    bpr = flags.FLAGS.bpr
    lr, bpr_reg, bpr_iterations = float(bpr[0]), float(bpr[1]), int(bpr[2])
    k = flags.FLAGS.knn_k
    rows = []
    with threadpool_limits(1, "blas"):
        if tune:
            alpha, reg = max(ALS_GRID, key=lambda p: _val_ndcg10(Embeddings(
                *_factors(_als(train, *p))), data))
            lr, bpr_reg = max(BPR_GRID, key=lambda p: _val_ndcg10(Embeddings(
                *_factors(_bpr(train, *p, bpr_iterations))), data))
            k = max(KNN_GRID, key=lambda kk: _val_ndcg10(
                _knn_scores(_knn(train, kk), train, n_i), data))
            logging.info("tuned on validation: ALS alpha %g reg %g, BPR lr %g reg %g, "
                         "ItemKNN K %d", alpha, reg, lr, bpr_reg, k)
        model, fit_s, first = timed(lambda: _als(train, alpha, reg), repeats)
        model.partial_fit_users(val_users, sp.csr_matrix(train_val[val_users]))
        source = Embeddings(*_factors(model))
        rows.append(Row("implicit ALS", "implicit", "train+val", evaluate(source, data), fit_s,
                        first, {"factors": flags.FLAGS.factors,
                                "iterations": flags.FLAGS.iterations,
                                "alpha": alpha, "regularization": reg, "use_cg": True},
                        source=source))
        model, fit_s, first = timed(lambda: _bpr(train, lr, bpr_reg, bpr_iterations), repeats)
        source = Embeddings(*_factors(model))
        rows.append(Row("implicit BPR", "implicit", "train", evaluate(source, data), fit_s,
                        first, {"factors": flags.FLAGS.factors, "learning_rate": lr,
                                "regularization": bpr_reg, "iterations": bpr_iterations},
                        source=source))
        model, fit_s, first = timed(lambda: _knn(train, k), repeats)
        source = _knn_scores(model, sp.csr_matrix(train_val), n_i)
        rows.append(Row("implicit ItemKNN (cosine)", "implicit", "train+val",
                        evaluate(source, data), fit_s, first, {"K": k}, source=source))
    return rows


def run_slug(name: str) -> str:
    """A row name as a directory name: ``"implicit ItemKNN (cosine)"`` → ``implicit_itemknn``."""
    return "_".join(name.split("(")[0].lower().replace(",", " ").split())


def save_peer_runs(rows: Sequence[Row], directory: str | Path, data: ImplicitData
                   ) -> dict[str, Path]:
    """Writes every row that carries a score source as ``<directory>/<slug>/`` (a run
    ``experiments/compare.py`` reads): embeddings as they are, score functions as a dense
    ``[num_users, num_items]`` matrix; ``seen_parts`` from the row, fit times in the metadata.

    Returns:
      The written directories by row name.
    """
    written = {}
    for r in rows:
        if r.source is None:
            continue
        payload = (dict(user_embeddings=r.source.users, item_embeddings=r.source.items)
                   if isinstance(r.source, Embeddings)
                   else dict(scores=np.asarray(r.source(np.arange(data.num_users)), np.float32)))
        written[r.name] = save_run(
            Path(directory) / run_slug(r.name), name=r.name, model=f"{r.library}: {r.name}",
            dataset=data.dataset, split_fingerprint=data.split_fingerprint,
            split_protocol=data.split_protocol, seen_parts=tuple(r.seen.split("+")),
            metadata={"fit_time_s": r.fit_s, "first_fit_time_s": r.first_fit_s,
                      "settings": r.settings, "library": r.library}, **payload)
    return written


def _factors(model) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(model.user_factors, np.float32),
            np.asarray(model.item_factors, np.float32))


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    """Means with CIs per row, and the paired tests of ``PAIRS``."""
    by_name = {r.name: r for r in rows}
    table = []
    for r in rows:
        entry = {"name": r.name, "library": r.library, "seen": r.seen, "fit_s": r.fit_s,
                 "first_fit_s": r.first_fit_s, "compile_s": r.compile_s, "settings": r.settings,
                 "num_users": len(r.metrics.users)}
        for m in METRICS:
            values = r.metrics.values[m]
            entry[m] = {"mean": float(values.mean()), "ci": list(mean_ci(values))}
        table.append(entry)
    tests = []
    for a, b in PAIRS:
        if a in by_name and b in by_name:
            for m in METRICS:
                c = compare_paired(by_name[a].metrics.values[m], by_name[b].metrics.values[m])
                tests.append({"a": a, "b": b, "metric": m, "delta": c.delta,
                              "delta_ci": list(c.delta_ci), "t_pvalue": c.t_pvalue,
                              "wilcoxon_pvalue": c.wilcoxon_pvalue,
                              "fit_ratio": by_name[a].fit_s / by_name[b].fit_s})
    return {"rows": table, "paired_tests": tests}


def to_markdown(result: Mapping[str, Any]) -> str:
    """The results table and the paired tests."""
    def cell(v):
        return f"{v['mean']:.4f} [{v['ci'][0]:.4f}, {v['ci'][1]:.4f}]"
    lines = [harness.markdown_table(
        ["model", "library", "test users from", "HR@10", "NDCG@10", "HR@100", "fit s",
         "first fit s", "of which compile s"],
        [[r["name"], r["library"], r["seen"], *(cell(r[m]) for m in METRICS),
          f"{r['fit_s']:.2f}", f"{r['first_fit_s']:.2f}", harness.fmt_s(r["compile_s"])]
         for r in result["rows"]], align="lllrrrrrr"), ""]
    if result["paired_tests"]:
        lines += [harness.markdown_table(
            ["ours", "implicit", "metric", "Δ [95% CI]", "p (t)", "p (Wilcoxon)",
             "fit time ratio"],
            [[t["a"], t["b"], t["metric"],
              f"{t['delta']:+.4f} [{t['delta_ci'][0]:+.4f}, {t['delta_ci'][1]:+.4f}]",
              f"{t['t_pvalue']:.3f}", f"{t['wilcoxon_pvalue']:.3f}", f"{t['fit_ratio']:.2f}×"]
             for t in result["paired_tests"]], align="lllrrrr"), ""]
    env = result["environment"]
    lines.append(f"{harness.cpu_line(env)}; {result['num_users']} test users; fit s: median "
                 f"of {result['repeats']} fits after the first.")
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    """The script's flags; defined when it runs, not on import (the tests import this module
    beside other benchmarks that have flags of the same names)."""
    flags.DEFINE_string("config", "configs/ncf_ml100k.py",
                        "Config whose data and split every model uses.")
    flags.DEFINE_string("output_dir", "workdirs/peers_implicit",
                        "Where peers_implicit.{json,md} go.")
    flags.DEFINE_integer("factors", 128, "Factors of both iALS (ours: model.dim).")
    flags.DEFINE_integer("iterations", 15, "Iterations of both iALS.")
    flags.DEFINE_integer("repeats", 3, "Timed fits after the first (median).")
    flags.DEFINE_bool("tune", False, "Choose implicit's BPR and K on validation.")
    flags.DEFINE_list("bpr", ["0.01", "0.01", "100"],
                      "BPR learning rate, regularization, iterations (without --tune).")
    flags.DEFINE_integer("knn_k", 400, "implicit CosineRecommender K (without --tune).")
    flags.DEFINE_integer("seed", 0, "Seed of implicit's initial factors.")
    flags.DEFINE_string("runs_dir", None, "Also write each implicit model as a run directory "
                        "under this one (for experiments/compare.py).")
    flags.DEFINE_bool("ours", True, "Fit this project's models too (the paired tests need "
                      "them; --noours with --runs_dir writes the peers' runs only).")


def main(argv: Sequence[str]) -> None:
    del argv
    quiet_startup()
    data = load_implicit_data(load_config_file(flags.FLAGS.config))
    rows = ((ours(data, flags.FLAGS.repeats) if flags.FLAGS.ours else [])
            + peers(data, flags.FLAGS.repeats, flags.FLAGS.tune))
    if flags.FLAGS.runs_dir:
        for name, path in save_peer_runs(rows, flags.FLAGS.runs_dir, data).items():
            logging.info("wrote the run of %s to %s", name, path)
    result = {**summarize(rows), "config": flags.FLAGS.config, "repeats": flags.FLAGS.repeats,
              "num_users": len(rows[0].metrics.users), "tuned": flags.FLAGS.tune,
              "environment": harness.environment(),
              "implicit_version": harness.package_versions(("implicit",)).get("implicit")}
    markdown = to_markdown(result)
    harness.write_results(flags.FLAGS.output_dir, "peers_implicit", result, markdown)
    print(markdown)


if __name__ == "__main__":
    define_flags()
    app.run(main)
