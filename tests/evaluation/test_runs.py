"""The on-disk run format: round trips, validation, and refusal of mismatched splits."""

import json

import numpy as np
import pytest

from recsys_jax.evaluation import runs
from recsys_jax.evaluation.run_comparison import SplitMismatchError, check_runs
from recsys_jax.evaluation.sources import Embeddings, RankedLists, ScoreMatrix


def _save(path, **kw):
    base = dict(name="m", model="mf", dataset="toy", split_fingerprint="f" * 64,
                split_protocol="random", seen_parts=("train",))
    return runs.save_run(path, **{**base, **kw})


def test_embedding_run_round_trip(tmp_path):
    u, it = np.ones((3, 2)), np.arange(8.0).reshape(4, 2)
    _save(tmp_path / "r", user_embeddings=u, item_embeddings=it, similarity="cosine",
          metadata={"dim": 2})
    run = runs.load_run(tmp_path / "r")
    assert (run.kind, run.num_users, run.num_items, run.similarity) == ("embeddings", 3, 4,
                                                                        "cosine")
    assert run.metadata == {"dim": 2} and run.protocol == "full"
    assert isinstance(run.source, Embeddings)
    np.testing.assert_array_equal(run.source.items, it.astype(np.float32))
    meta = json.loads((tmp_path / "r" / runs.RUN_FILE).read_text())
    assert meta["format"] == runs.RUN_FORMAT and meta["created"].endswith("+00:00")


def test_ranked_and_score_runs(tmp_path):
    _save(tmp_path / "ranked", ranked=np.array([[2, 1], [0, -1]]), ranked_users=[4, 1],
          num_users=5, num_items=9)
    run = runs.load_run(tmp_path / "ranked")
    assert (run.kind, run.num_users, run.num_items) == ("ranked", 5, 9)
    assert isinstance(run.source, RankedLists) and run.source.users.tolist() == [4, 1]
    _save(tmp_path / "scores", scores=np.zeros((2, 3)))
    run = runs.load_run(tmp_path / "scores")
    assert isinstance(run.source, ScoreMatrix) and run.num_items == 3
    assert isinstance(run.arrays["scores"], np.memmap)


def test_bad_runs_are_refused(tmp_path):
    with pytest.raises(runs.RunError, match="exactly one"):
        _save(tmp_path / "a", scores=np.zeros((2, 2)), ranked=np.zeros((2, 2), int))
    with pytest.raises(runs.RunError, match="both"):
        _save(tmp_path / "a", user_embeddings=np.zeros((2, 2)))
    with pytest.raises(runs.RunError, match="num_items=5"):
        _save(tmp_path / "a", scores=np.zeros((2, 3)), num_items=5)
    with pytest.raises(runs.RunError, match="not a run"):
        runs.load_run(tmp_path / "missing")
    _save(tmp_path / "b", scores=np.zeros((2, 2)))
    (tmp_path / "b" / "scores.npy").unlink()
    with pytest.raises(runs.RunError, match="lacks scores.npy"):
        runs.load_run(tmp_path / "b")


def test_runs_on_other_splits_are_refused(tmp_path):
    good = runs.load_run(_save(tmp_path / "good", scores=np.zeros((2, 3))))
    other = runs.load_run(_save(tmp_path / "other", name="x", split_fingerprint="0" * 64,
                                scores=np.zeros((2, 3))))
    check_runs([good], "f" * 64, 2, 3)
    with pytest.raises(SplitMismatchError, match="x .*split 000000000000"):
        check_runs([good, other], "f" * 64, 2, 3)
    with pytest.raises(SplitMismatchError, match="2 users × 3 items ≠ 2 × 4"):
        check_runs([good], "f" * 64, 2, 4)
    with pytest.raises(SplitMismatchError, match="used twice"):
        check_runs([good, good], "f" * 64, 2, 3)


def test_seen_parts_round_trip_in_split_order(tmp_path):
    _save(tmp_path / "r", scores=np.zeros((2, 3)), seen_parts=["val", "train"])
    assert runs.load_run(tmp_path / "r").seen_parts == ("train", "val")
    meta = json.loads((tmp_path / "r" / runs.RUN_FILE).read_text())
    assert meta["seen_parts"] == ["train", "val"] and meta["version"] == 2


@pytest.mark.parametrize("parts", [(), ("val",), ("train", "train"), ("train", "tests"),
                                   "train"])
def test_seen_parts_must_be_distinct_known_parts_with_train(tmp_path, parts):
    with pytest.raises(runs.RunError, match="seen_parts"):
        _save(tmp_path / "r", scores=np.zeros((2, 3)), seen_parts=parts)
    assert not (tmp_path / "r" / runs.RUN_FILE).exists()


def test_a_version_1_run_is_refused_with_what_changed(tmp_path):
    _save(tmp_path / "r", scores=np.zeros((2, 3)))
    meta_path = tmp_path / "r" / runs.RUN_FILE
    meta = json.loads(meta_path.read_text())
    del meta["seen_parts"]
    meta_path.write_text(json.dumps({**meta, "version": 1}))
    with pytest.raises(runs.RunError, match="seen_parts"):
        runs.load_run(tmp_path / "r")


def test_update_run_metadata_merges_and_keeps_the_run_readable(tmp_path):
    _save(tmp_path / "r", scores=np.zeros((2, 3)), metadata={"config": {"lr": 0.1}})
    runs.update_run_metadata(tmp_path / "r", {"total_wall_time_s": 12.5, "compile_time_s": 1.0})
    run = runs.load_run(tmp_path / "r")
    assert run.metadata == {"config": {"lr": 0.1}, "total_wall_time_s": 12.5,
                            "compile_time_s": 1.0}
    assert run.seen_parts == ("train",) and run.kind == "scores"
    with pytest.raises(runs.RunError, match="not a run"):
        runs.update_run_metadata(tmp_path / "missing", {"x": 1})
