r"""Compares saved runs with the popularity and random baselines on one split.

Usage:
  python experiments/compare.py --dataset=ml-100k --split=leave_one_out \
      --output_dir=workdirs/compare_ml100k
  python experiments/compare.py --runs=workdirs/mf/run,workdirs/two_tower/run \
      --dataset=ml-100k --split=random --seed=0 --k=10,50,100 --output_dir=workdirs/compare
  python experiments/compare.py --dataset=ml-100k --split=leave_one_out --protocol=sampled \
      --num_negatives=99 --output_dir=workdirs/compare_sampled

The split is rebuilt from --dataset/--split/--seed (or loaded from --split_dir) and every run
must carry its fingerprint: runs made on another split are refused. Writes into --output_dir
``comparison_<protocol>.{md,csv,json,png}`` (mean ± 95% CI, Δ vs popularity, Holm-corrected
p-values), per-user values under ``per_user_<protocol>/``, and, unless
--rating_baselines is empty, ``comparison_rating.*`` for the rating baselines.
"""

from __future__ import annotations

from absl import app, flags, logging

from recsys_jax.console import quiet_startup
from recsys_jax.data import ids, movielens, splits, synthetic
from recsys_jax.evaluation import (
    baselines,
    beyond_accuracy,
    comparison_table,
    evaluate,
    run_comparison,
    runs,
)
from recsys_jax.evaluation.comparison_table import BootstrapSettings
from recsys_jax.fileio import load_npy

_RUNS = flags.DEFINE_list("runs", [], "Run directories (written by evaluation.runs.save_run).")
_DATASET = flags.DEFINE_enum("dataset", "ml-100k", [*movielens.MOVIELENS_NAMES, "synthetic"],
                             "Data set the runs were trained on.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory holding the extracted data set.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None, "Data cache directory.")
_SYNTHETIC = flags.DEFINE_list("synthetic_size", ["2000", "1000", "50000"],
                               "users,items,interactions for --dataset=synthetic.")
_SPLIT = flags.DEFINE_enum("split", "leave_one_out", list(splits.PROTOCOLS), "Split protocol.")
_SPLIT_DIR = flags.DEFINE_string("split_dir", None, "Load this saved split instead.")
_SEED = flags.DEFINE_integer("seed", 0, "Split seed.")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.1, "Validation share.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "Test share.")
_HOLDOUT_K = flags.DEFINE_integer("holdout_k", None, "user_temporal: hold out the last k.")
_PART = flags.DEFINE_enum("part", "test", list(evaluate.PARTS), "Part to evaluate on.")
_K = flags.DEFINE_list("k", ["10", "50", "100"], "Cut-offs K.")
_PROTOCOL = flags.DEFINE_enum("protocol", "full", ["full", "sampled"],
                              "Full ranking, or held-out items among sampled unseen items.")
_NUM_NEGATIVES = flags.DEFINE_integer("num_negatives", 99, "Sampled protocol: N.")
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 0, "Sampled protocol: seed.")
_BASELINES = flags.DEFINE_list("baselines", list(baselines.RANKING_BASELINES),
                               "Ranking baselines (popularity is always included).")
_REFERENCE = flags.DEFINE_string("reference", "popularity", "Model every Δ is measured from.")
_RANDOM_SEED = flags.DEFINE_integer("random_seed", 0, "Seed of the random baseline.")
_GRADED = flags.DEFINE_bool("graded", False, "Also report NDCG with ratings as gains.")
_ILD_EMBEDDINGS = flags.DEFINE_string(
    "ild_embeddings", None, "Item embeddings .npy (one space for all models) for ILD.")
_RATING_BASELINES = flags.DEFINE_list("rating_baselines", list(baselines.RATING_BASELINES),
                                      "Rating baselines to compare (empty: none).")
_N_RESAMPLES = flags.DEFINE_integer("n_resamples", 2000, "Bootstrap resamples.")
_CONFIDENCE = flags.DEFINE_float("confidence", 0.95, "Confidence level of the intervals.")
_CI_METHOD = flags.DEFINE_enum("ci_method", "percentile", ["percentile", "basic", "BCa"],
                               "scipy.stats.bootstrap method.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", None, "Users per device call.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the comparison.")
flags.mark_flag_as_required("output_dir")


def main(argv: list[str]) -> None:
    quiet_startup()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _DATASET.value == "synthetic":
        n_users, n_items, n_events = (int(x) for x in _SYNTHETIC.value)
        dataset = synthetic.generate_synthetic(n_users, n_items, n_events, seed=_SEED.value)
    else:
        dataset = movielens.load_movielens(_DATASET.value, data_dir=_DATA_DIR.value,
                                           cache_dir=_CACHE_DIR.value)
    encoded, mapping = ids.encode_dataset(dataset)
    if _SPLIT_DIR.value:
        split = splits.Split.load(_SPLIT_DIR.value)
    else:
        split = splits.make_split(encoded.interactions, _SPLIT.value, seed=_SEED.value,
                                  val_fraction=_VAL_FRACTION.value,
                                  test_fraction=_TEST_FRACTION.value, holdout_k=_HOLDOUT_K.value)
    target = evaluate.target_from_split(split, mapping.num_users, mapping.num_items, _PART.value)
    vectors = {"genres": beyond_accuracy.genre_matrix(encoded.items["genres"],
                                                      encoded.genre_names)}
    if _ILD_EMBEDDINGS.value:
        vectors["embeddings"] = load_npy(_ILD_EMBEDDINGS.value)
    bootstrap = BootstrapSettings(_CONFIDENCE.value, _N_RESAMPLES.value, method=_CI_METHOD.value)
    info = {"dataset": dataset.name, "split_protocol": split.protocol,
            "split_fingerprint": split.fingerprint(), "part": _PART.value,
            "runs": _RUNS.value}

    try:
        result = run_comparison.compare_ranking(
            [runs.load_run(path) for path in _RUNS.value], target, split.fingerprint(),
            [int(k) for k in _K.value], baselines=_BASELINES.value, reference=_REFERENCE.value,
            protocol=_PROTOCOL.value, num_negatives=_NUM_NEGATIVES.value,
            sample_seed=_SAMPLE_SEED.value, random_seed=_RANDOM_SEED.value,
            graded=_GRADED.value, item_vectors=vectors, bootstrap=bootstrap,
            chunk_size=_CHUNK_SIZE.value)
    except runs.RunError as e:  # a bad or mismatched run: the message says which and why
        raise SystemExit(f"error: {e}") from None
    timings = {name: {"compile_s": s.compile_seconds, "rank_s": s.rank_seconds}
               for name, s in result.timings.items()}
    title = f"{dataset.name}, {split.protocol} split, {_PART.value}"
    paths = comparison_table.write_comparison(_OUTPUT_DIR.value, result.table, result.evaluations,
                                     title=title, info={**info, "ranking_timings": timings})
    print(comparison_table.to_markdown(result.table, title))

    if _RATING_BASELINES.value:
        parts = {name: tuple(frame[c].to_numpy() for c in ("user_id", "item_id", "rating"))
                 for name, frame in (("train", split.train), ("eval", split.parts()[_PART.value]))}
        ratings = run_comparison.compare_rating_baselines(
            parts["train"], parts["eval"], mapping.num_users, mapping.num_items,
            dataset.rating_scale, kinds=_RATING_BASELINES.value, bootstrap=bootstrap)
        comparison_table.write_comparison(_OUTPUT_DIR.value, ratings.table, ratings.evaluations,
                                 title=title, info=info)
        print(comparison_table.to_markdown(ratings.table, f"{title}: rating baselines"))
    logging.info("Wrote %s", {k: str(v) for k, v in paths.items()})


if __name__ == "__main__":
    app.run(main)
