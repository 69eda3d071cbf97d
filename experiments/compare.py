r"""Compares saved runs with the popularity and random baselines on one split.

Usage:
  python experiments/compare.py --dataset=ml-100k --split=leave_one_out \
      --output_dir=workdirs/compare_ml100k
  python experiments/compare.py --runs=workdirs/mf/run,workdirs/two_tower/run \
      --dataset=ml-100k --split=random --seed=0 --k=10,50,100 --output_dir=workdirs/compare
  python experiments/compare.py --dataset=ml-100k --split=leave_one_out --protocol=sampled \
      --num_negatives=99 --output_dir=workdirs/compare_sampled

  python experiments/compare.py --split_dir=workdirs/split --dataset=ml-100k \
      --scores=mine=scores.npy --embeddings=theirs=users.npy,items.npy \
      --outside_seen_parts=train,val --reference=mine --output_dir=workdirs/compare_outside

The split is rebuilt from --dataset/--split/--seed (or loaded from --split_dir) and every run
must carry its fingerprint: runs made on another split are refused. Outside work (--scores,
--embeddings) is scored against that split as in-memory runs. A run that has seen --part is
refused, and so are runs whose users have seen different parts unless
--allow_unequal_information; the baselines are fitted on the parts the runs have seen.
Writes into --output_dir ``comparison_<protocol>.{md,csv,json,png}`` (mean ± 95% CI, Δ vs
popularity, Holm-corrected p-values, the parts each model saw), per-user values under
``per_user_<protocol>/``, and, unless --rating_baselines is empty, ``comparison_rating.*``
for the rating baselines.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
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


def _split_label(entry: str, flag: str) -> tuple[str, str]:
    """``label=value`` → (label, value); refuses a missing label or value."""
    label, sep, value = entry.partition("=")
    if not sep or not label or not value:
        raise runs.RunError(f"--{flag}={entry!r}: expected name=path")
    return label, value


def _load_array(path: str, flag: str, name: str):
    try:
        return load_npy(path)
    except (OSError, ValueError) as e:
        raise runs.RunError(f"--{flag} {name}: cannot read {path} ({e})") from None


def load_runs(split_fingerprint: str, dataset: str, split_protocol: str
              ) -> tuple[list[runs.Run], dict[str, str]]:
    """Runs from --runs, --scores and --embeddings, and an alias → shown-name map.

    The aliases let --reference name a --runs directory as the user typed it.
    """
    loaded, aliases = [], {}
    for entry in _RUNS.value:
        label, sep, path = entry.partition("=")
        run = runs.load_run(path if sep else entry)
        if sep:
            run = dataclasses.replace(run, name=label)
        aliases[entry] = aliases[path if sep else entry] = run.name
        loaded.append(run)
    common = dict(split_fingerprint=split_fingerprint, seen_parts=_OUTSIDE_SEEN_PARTS.value,
                  dataset=dataset, split_protocol=split_protocol)
    for entry in _SCORES.value:
        name, path = _split_label(entry, "scores")
        loaded.append(runs.in_memory_run(name, path=path, model="outside scores",
                                         scores=_load_array(path, "scores", name), **common))
    for entry in _EMBEDDINGS.value:
        name, paths = _split_label(entry, "embeddings")
        files = paths.split(",")
        if len(files) != 2:
            raise runs.RunError(f"--embeddings={entry!r}: expected name=users.npy,items.npy")
        users, items = (_load_array(f, "embeddings", name) for f in files)
        loaded.append(runs.in_memory_run(name, path=paths, model="outside embeddings",
                                         user_embeddings=users, item_embeddings=items,
                                         similarity=_OUTSIDE_SIMILARITY.value, **common))
    return loaded, aliases

_RUNS = flags.DEFINE_list(
    "runs", [], "Run directories (written by evaluation.runs.save_run), each optionally "
    "label=dir to show it as `label` in the table (default: the run's name).")
_SCORES = flags.DEFINE_multi_string(
    "scores", [], "Outside work as name=path.npy: a dense float [num_users, num_items] score "
    "matrix in the split's encoded ids (repeatable).")
_EMBEDDINGS = flags.DEFINE_multi_string(
    "embeddings", [], "Outside work as name=users.npy,items.npy: [num_users, d] and "
    "[num_items, d] embeddings, score = dot product (repeatable).")
_OUTSIDE_SEEN_PARTS = flags.DEFINE_list(
    "outside_seen_parts", ["train"], "Split parts the users of --scores/--embeddings have "
    "seen: train, or train,val.")
_OUTSIDE_SIMILARITY = flags.DEFINE_enum("outside_similarity", "dot", ["dot", "cosine"],
                                        "Similarity of --embeddings.")
_ALLOW_UNEQUAL = flags.DEFINE_bool(
    "allow_unequal_information", False, "Compare runs whose users have seen different parts "
    "(the table says which); refused by default.")
_BASELINE_SEEN_PARTS = flags.DEFINE_list(
    "baseline_seen_parts", None, "Parts the baselines are fitted on (default: the parts the "
    "runs have seen; train without runs).")
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
_TIE_ORDER = flags.DEFINE_enum("tie_order", "random", list(splits.TIE_ORDERS),
                               "Order within equal timestamps (per-user protocols).")
_MIN_USER = flags.DEFINE_integer("min_user_interactions", 0, "k-core: events per user (0: off).")
_MIN_ITEM = flags.DEFINE_integer("min_item_interactions", 0, "k-core: events per item (0: off).")
_PART = flags.DEFINE_enum("part", "test", list(evaluate.PARTS), "Part to evaluate on.")
_K = flags.DEFINE_list("k", ["10", "50", "100"], "Cut-offs K.")
_PROTOCOL = flags.DEFINE_enum("protocol", "full", ["full", "sampled"],
                              "Full ranking, or held-out items among sampled unseen items.")
_NUM_NEGATIVES = flags.DEFINE_integer("num_negatives", 99, "Sampled protocol: N.")
_SAMPLE_SEED = flags.DEFINE_integer("sample_seed", 0, "Sampled protocol: seed.")
_BASELINES = flags.DEFINE_list("baselines", list(baselines.RANKING_BASELINES),
                               "Ranking baselines (popularity is always included).")
_REFERENCE = flags.DEFINE_string(
    "reference", "popularity", "Model every Δ is measured from: a name shown in the table "
    "(a baseline, a --runs label or run name, a --scores/--embeddings name), or a --runs "
    "directory as passed.")
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
                                  test_fraction=_TEST_FRACTION.value, holdout_k=_HOLDOUT_K.value,
                                  tie_order=_TIE_ORDER.value,
                                  min_user_interactions=_MIN_USER.value,
                                  min_item_interactions=_MIN_ITEM.value)
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
        loaded, aliases = load_runs(split.fingerprint(), dataset.name, split.protocol)
        result = run_comparison.compare_ranking(
            loaded, target, split.fingerprint(),
            [int(k) for k in _K.value], baselines=_BASELINES.value,
            reference=aliases.get(_REFERENCE.value, _REFERENCE.value),
            protocol=_PROTOCOL.value, num_negatives=_NUM_NEGATIVES.value,
            sample_seed=_SAMPLE_SEED.value, random_seed=_RANDOM_SEED.value,
            graded=_GRADED.value, item_vectors=vectors, bootstrap=bootstrap,
            chunk_size=_CHUNK_SIZE.value, allow_unequal_information=_ALLOW_UNEQUAL.value,
            baseline_seen_parts=_BASELINE_SEEN_PARTS.value)
    except runs.RunError as e:  # a bad or mismatched run: the message says which and why
        raise SystemExit(f"error: {e}") from None
    info["baseline_seen_parts"] = list(result.baseline_seen_parts)
    info["seen_parts"] = {e.name: list(e.seen_parts or ()) for e in result.evaluations}
    timings = {name: {"compile_s": s.compile_seconds, "rank_s": s.rank_seconds}
               for name, s in result.timings.items()}
    title = f"{dataset.name}, {split.protocol} split, {_PART.value}"
    paths = comparison_table.write_comparison(_OUTPUT_DIR.value, result.table, result.evaluations,
                                     title=title, info={**info, "ranking_timings": timings})
    print(comparison_table.to_markdown(result.table, title))

    if _RATING_BASELINES.value:
        # Fitted on the same parts as the ranking baselines.
        fitted = pd.concat([split.parts()[p] for p in result.baseline_seen_parts])
        parts = {name: tuple(frame[c].to_numpy() for c in ("user_id", "item_id", "rating"))
                 for name, frame in (("train", fitted), ("eval", split.parts()[_PART.value]))}
        ratings = run_comparison.compare_rating_baselines(
            parts["train"], parts["eval"], mapping.num_users, mapping.num_items,
            dataset.rating_scale, kinds=_RATING_BASELINES.value, bootstrap=bootstrap,
            seen_parts=result.baseline_seen_parts)
        comparison_table.write_comparison(_OUTPUT_DIR.value, ratings.table, ratings.evaluations,
                                 title=title, info=info)
        print(comparison_table.to_markdown(ratings.table, f"{title}: rating baselines"))
    logging.info("Wrote %s", {k: str(v) for k, v in paths.items()})


if __name__ == "__main__":
    app.run(main)
