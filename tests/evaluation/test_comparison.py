"""Comparison tables and their files, on a small synthetic split."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from recsys_jax.evaluation import baselines, comparison_table, run_comparison, runs, significance
from recsys_jax.evaluation.comparison_table import BootstrapSettings, ModelEvaluation
from recsys_jax.evaluation.evaluate import target_from_arrays
from recsys_jax.evaluation.ranking import full_ranking
from recsys_jax.evaluation.results import PerUserMetrics

FAST = BootstrapSettings(n_resamples=200)
FINGERPRINT = "a" * 64


def _target(seed=0, num_users=60, num_items=80):
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.c_[rng.integers(0, num_users, 2500), rng.integers(0, num_items, 2500)],
                      axis=0)
    part = rng.choice(3, size=len(pairs), p=[0.8, 0.1, 0.1])
    ratings = rng.integers(1, 6, len(pairs)).astype(float)
    parts = [(pairs[part == p, 0], pairs[part == p, 1], ratings[part == p]) for p in range(3)]
    return target_from_arrays(*parts, num_users, num_items), parts


def test_holm_and_tests_in_table_match_direct_computation():
    rng = np.random.default_rng(0)
    users = np.arange(100)
    base = rng.random(100)
    evals = [ModelEvaluation("popularity", PerUserMetrics(users, {"ndcg@10": base}))]
    for j, shift in enumerate([0.02, 0.05, 0.0]):
        evals.append(ModelEvaluation(f"m{j}", PerUserMetrics(
            users, {"ndcg@10": base + shift + 0.1 * rng.standard_normal(100)})))
    table = comparison_table.comparison_table(evals, "popularity", bootstrap=FAST)
    assert table["model"].tolist() == ["popularity", "m0", "m1", "m2"]
    rows = table.iloc[1:]
    expected_p = [scipy.stats.ttest_rel(e.metrics.values["ndcg@10"], base).pvalue
                  for e in evals[1:]]
    np.testing.assert_allclose(rows["p_ttest"], expected_p)
    np.testing.assert_allclose(rows["p_ttest_holm"], significance.holm(expected_p))
    np.testing.assert_allclose(rows["delta"], [e.metrics.mean("ndcg@10") - base.mean()
                                               for e in evals[1:]])
    assert (rows["delta_ci_low"] < rows["delta"]).all() and (rows["delta"] < rows[
        "delta_ci_high"]).all()
    assert table.iloc[0][["delta", "p_ttest"]].isna().all()
    assert rows["marker"].iloc[1] == significance.significance_marker(rows["p_ttest_holm"].iloc[1])


def test_models_on_different_users_or_protocols_are_refused():
    a = ModelEvaluation("popularity", PerUserMetrics(np.arange(3), {"x": np.zeros(3)}))
    b = ModelEvaluation("b", PerUserMetrics(np.arange(1, 4), {"x": np.zeros(3)}))
    with pytest.raises(ValueError, match="other users"):
        comparison_table.comparison_table([a, b], "popularity")
    c = ModelEvaluation("c", PerUserMetrics(np.arange(3), {"x": np.zeros(3)},
                                            protocol="sampled-99"))
    with pytest.raises(ValueError, match="across protocols"):
        comparison_table.comparison_table([a, c], "popularity")
    with pytest.raises(ValueError, match="not among"):
        comparison_table.comparison_table([a], "random")


def test_compare_ranking_writes_every_output(tmp_path):
    target, _ = _target()
    rng = np.random.default_rng(1)
    runs.save_run(tmp_path / "run", name="emb", model="mf", dataset="toy",
                  seen_parts=("train",), split_fingerprint=FINGERPRINT,
                  user_embeddings=rng.standard_normal((60, 4)),
                  item_embeddings=rng.standard_normal((80, 4)))
    result = run_comparison.compare_ranking([runs.load_run(tmp_path / "run")], target, FINGERPRINT,
                                        [5, 10], bootstrap=FAST)
    table = result.table
    assert set(table["model"]) == {"popularity", "random", "emb"}
    assert (table["baseline"] == "popularity").all() and (table["protocol"] == "full").all()
    assert {"ndcg@10", "novelty@5", "coverage@10", "gini@5"} <= set(table["metric"])
    paths = comparison_table.write_comparison(tmp_path / "out", table, result.evaluations,
                                              title="toy")
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == list(comparison_table.TABLE_COLUMNS) and len(csv) == len(table)
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    md = paths["markdown"].read_text()
    assert "| ndcg@10 | emb |" in md and "Δ vs popularity" in md
    users = np.load(paths["per_user"] / "emb" / "users.npy")
    ndcg = np.load(paths["per_user"] / "emb" / "ndcg_at_10_full.npy")
    np.testing.assert_array_equal(users, result.evaluations[2].metrics.users)
    assert ndcg.mean() == pytest.approx(table.query("model == 'emb' and metric == 'ndcg@10'")[
        "mean"].item())


def test_sampled_comparison_is_labelled_everywhere(tmp_path):
    target, _ = _target(2)
    result = run_comparison.compare_ranking([], target, FINGERPRINT, [10], protocol="sampled",
                                        num_negatives=20, bootstrap=FAST)
    assert (result.table["protocol"] == "sampled-20").all()
    paths = comparison_table.write_comparison(tmp_path, result.table, result.evaluations)
    for key in ("markdown", "csv", "json", "png", "per_user"):
        assert "sampled-20" in paths[key].name
    for f in paths["per_user"].rglob("*_at_*.npy"):
        assert "sampled-20" in f.name
    assert "Sampled protocol" in paths["markdown"].read_text()


def test_popularity_is_always_in_the_table():
    target, _ = _target(3)
    result = run_comparison.compare_ranking([], target, FINGERPRINT, [5], baselines=["random"],
                                        bootstrap=FAST)
    assert result.table["model"].drop_duplicates().tolist() == ["popularity", "random"]


def test_popularity_baseline_ranks_by_training_counts_ties_by_lower_id():
    target, _ = _target(4)
    counts = target.train_counts
    assert len(np.unique(counts)) < len(counts)  # there are ties to break
    order = np.lexsort((np.arange(len(counts)), -counts))
    excluded = target.exclude.toarray() > 0
    users = target.users
    top = full_ranking(baselines.ranking_baseline("popularity", target.train), users, 7,
                       exclude=target.exclude)
    for u, row in zip(users, top.items):
        assert row.tolist() == [i for i in order if not excluded[u, i]][:7]


def test_random_baseline_is_reproducible_and_independent_of_chunking():
    target, _ = _target(6)
    source = baselines.ranking_baseline("random", target.train, seed=3)
    a = full_ranking(source, target.users, 10, exclude=target.exclude, chunk_size=4)
    b = full_ranking(source, target.users, 10, exclude=target.exclude, chunk_size=64)
    np.testing.assert_array_equal(a.items, b.items)
    other = baselines.ranking_baseline("random", target.train, seed=4)
    c = full_ranking(other, target.users, 10, exclude=target.exclude, chunk_size=4)
    assert not np.array_equal(a.items, c.items)


def test_rating_comparison():
    _, parts = _target(5)
    result = run_comparison.compare_rating_baselines(parts[0], parts[2], 60, 80, (1, 5),
                                                 bootstrap=FAST)
    table = result.table
    assert table["metric"].drop_duplicates().tolist() == ["rmse", "mae"]
    assert (table["protocol"] == "rating").all()
    bias = result.evaluations[-1].metrics
    rmse_row = table.query("model == 'user_item_bias' and metric == 'rmse'")
    assert rmse_row["mean"].item() == pytest.approx(bias.aggregates["rmse"])
    assert rmse_row["ci_low"].item() < rmse_row["mean"].item() < rmse_row["ci_high"].item()


def _scores_run(tmp_path, name, seen, seed=0, save=True):
    scores = np.random.default_rng(seed).standard_normal((60, 80)).astype(np.float32)
    if not save:
        return runs.in_memory_run(name, split_fingerprint=FINGERPRINT, seen_parts=seen,
                                  scores=scores)
    runs.save_run(tmp_path / name, name=name, model="mf", dataset="toy", seen_parts=seen,
                  split_fingerprint=FINGERPRINT, scores=scores)
    return runs.load_run(tmp_path / name)


def test_a_run_is_refused_on_a_part_its_users_have_seen(tmp_path):
    target = target_from_arrays(*_target()[1], 60, 80, part="val")
    leaky = _scores_run(tmp_path, "two_tower", ("train", "val"))
    with pytest.raises(run_comparison.InformationError,
                       match=r"(?s)on the val part.*two_tower .*train\+val"):
        run_comparison.compare_ranking([leaky], target, FINGERPRINT, [5], bootstrap=FAST)
    # Test is a later part: the same run is fine there.
    target_test, _ = _target()
    result = run_comparison.compare_ranking([leaky], target_test, FINGERPRINT, [5],
                                            bootstrap=FAST)
    assert set(result.table["seen_parts"]) == {"train+val"}


def _popularity_mean(target, seen_matrix, metric="ndcg@5"):
    from recsys_jax.evaluation.evaluate import evaluate_ranking
    source = baselines.popularity_source(baselines.item_popularity(seen_matrix), 60)
    return evaluate_ranking(source, target, [5]).values[metric].mean()


def test_unequal_information_is_refused_unless_allowed_and_then_shown(tmp_path):
    target, parts = _target()
    a = _scores_run(tmp_path, "mf", ("train",))
    b = _scores_run(tmp_path, "tt", ("train", "val"), seed=1)
    with pytest.raises(run_comparison.InformationError,
                       match=r"(?s)different parts.*mf: train.*tt: train\+val.*allow_unequal"):
        run_comparison.compare_ranking([a, b], target, FINGERPRINT, [5], bootstrap=FAST)
    result = run_comparison.compare_ranking([a, b], target, FINGERPRINT, [5], bootstrap=FAST,
                                            allow_unequal_information=True)
    seen = result.table.drop_duplicates("model").set_index("model")["seen_parts"]
    assert seen.to_dict() == {"popularity": "train+val", "random": "train+val", "mf": "train",
                              "tt": "train+val"}
    md = comparison_table.to_markdown(result.table)
    assert "**Unequal information**" in md and "popularity, random, tt: train+val; mf: train)" in md
    # Popularity was fitted on the union of what the runs saw: counts from train + val.
    train_val = target_from_arrays(
        tuple(np.r_[p, v] for p, v in zip(parts[0], parts[1])), ([], [], []), parts[2],
        60, 80).train
    got = result.table.query("model == 'popularity' and metric == 'ndcg@5'")["mean"].item()
    assert got == pytest.approx(_popularity_mean(target, train_val))
    assert got != pytest.approx(_popularity_mean(target, target.train))


def test_baselines_see_what_the_runs_saw(tmp_path):
    target, _ = _target()
    only_train = run_comparison.compare_ranking(
        [_scores_run(tmp_path, "mf", ("train",))], target, FINGERPRINT, [5], bootstrap=FAST)
    assert only_train.baseline_seen_parts == ("train",)
    got = only_train.table.query("model == 'popularity' and metric == 'ndcg@5'")["mean"].item()
    assert got == pytest.approx(_popularity_mean(target, target.train))
    assert "Every model's users have seen: train." in comparison_table.to_markdown(
        only_train.table)
    with pytest.raises(run_comparison.InformationError, match="val"):
        run_comparison.compare_ranking([], target_from_arrays(*_target()[1], 60, 80, part="val"),
                                       FINGERPRINT, [5], baseline_seen_parts=["train", "val"])


def test_outside_scores_equal_to_a_saved_run_give_identical_rows(tmp_path):
    target, _ = _target()
    saved = _scores_run(tmp_path, "mine", ("train",))
    outside = runs.in_memory_run("mine", split_fingerprint=FINGERPRINT, seen_parts=["train"],
                                 scores=np.asarray(saved.arrays["scores"]), path="mine.npy")
    a = run_comparison.compare_ranking([saved], target, FINGERPRINT, [5, 10], bootstrap=FAST)
    b = run_comparison.compare_ranking([outside], target, FINGERPRINT, [5, 10], bootstrap=FAST)
    pd.testing.assert_frame_equal(a.table, b.table)


def test_outside_run_is_checked_like_a_saved_one():
    with pytest.raises(runs.RunError, match="2-D"):
        runs.in_memory_run("x", split_fingerprint=FINGERPRINT, seen_parts=["train"],
                           scores=np.zeros(5))
    with pytest.raises(runs.RunError, match="seen_parts"):
        runs.in_memory_run("x", split_fingerprint=FINGERPRINT, seen_parts=["val"],
                           scores=np.zeros((2, 2)))


def test_reference_is_a_shown_name_and_unknown_names_are_listed(tmp_path):
    target, _ = _target()
    run = _scores_run(tmp_path, "mine", ("train",))
    result = run_comparison.compare_ranking([run], target, FINGERPRINT, [5], bootstrap=FAST,
                                            reference="mine")
    assert (result.table["baseline"] == "mine").all()
    assert result.table["model"].iloc[0] == "mine"
    with pytest.raises(runs.RunError, match=r"'nope'.*\['popularity', 'random', 'mine'\]"):
        run_comparison.compare_ranking([run], target, FINGERPRINT, [5], reference="nope")
