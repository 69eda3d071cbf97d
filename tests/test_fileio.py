import numpy as np
import pytest

from recsys_jax import fileio


def test_atomic_write_replaces_target_only_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    fileio.atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    # No temporary files are left behind after success or failure.
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_json_and_npy_round_trip(tmp_path):
    fileio.atomic_write_json(tmp_path / "a.json", {"b": [1, 2], "a": 1.5})
    assert (tmp_path / "a.json").read_text().startswith('{\n  "a": 1.5')
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    fileio.atomic_save_npy(tmp_path / "x.npy", array)
    np.testing.assert_array_equal(fileio.load_npy(tmp_path / "x.npy"), array)


def test_npy_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        fileio.load_npy(path)


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        fileio.atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644


def test_json_is_strict_and_numpy_aware(tmp_path):
    import json
    fileio.atomic_write_json(tmp_path / "m.json", {
        "n": np.int64(3), "x": np.float32(0.5), "missing": float("nan"), 1: [np.inf]})
    assert json.loads((tmp_path / "m.json").read_text()) == {
        "n": 3, "x": 0.5, "missing": None, "1": [None]}
