"""Bad serving input: every case is a clear error naming the input (or the correct result).

Index files: another model's embeddings, another run, a missing/corrupt sidecar, a stale or
missing offset, a truncated or unreadable index file. Queries: out-of-range, negative,
wrapping and float user ids; bad history and seen ids; wrong feature widths; bad k.
"""

import json

import numpy as np
import pytest
import scipy.sparse as sp
from flax import nnx

from recsys_jax.data.features import Standardizer
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.retrieval import index as index_lib
from recsys_jax.retrieval.index import IndexConfig, IndexFileError, IndexMismatchError
from recsys_jax.retrieval.retriever import QueryError, Retriever

NUM_USERS, NUM_ITEMS, USER_DIM, HISTORY = 10, 30, 5, 4


def _unit_rows(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _model(seed, history=False):
    rng = np.random.default_rng(0)
    users = rng.normal(size=(NUM_USERS, USER_DIM)).astype(np.float32)
    items = rng.normal(size=(NUM_ITEMS, 3)).astype(np.float32)
    hist = {}
    if history:
        hist = {"history_ids": rng.integers(0, NUM_ITEMS, (NUM_USERS, HISTORY)).astype(np.int32),
                "history_mask": np.ones((NUM_USERS, HISTORY), np.float32),
                "history_positions": True}
    return TwoTower(users, items, rngs=nnx.Rngs(seed), hidden_dim=8, dim=4, **hist)


@pytest.fixture(scope="module")
def retriever():
    model = _model(0, history=True)
    seen = sp.random_array((NUM_USERS, NUM_ITEMS), density=0.2, random_state=1,
                           format="csr").astype(bool)
    scaler = Standardizer.fit(np.random.default_rng(2).normal(size=(NUM_USERS, USER_DIM)))
    return Retriever(model, index_lib.build_index(model.ranking_embeddings()[1]),
                     user_scaler=scaler, seen=seen)


@pytest.fixture
def saved(tmp_path):
    """A centred (HNSW) index saved with its sidecar, and the items it indexes."""
    items = _unit_rows(200, 8, 0)
    path = tmp_path / "index.faiss"
    index_lib.save_index(index_lib.build_index(items, IndexConfig("hnsw", hnsw_m=8)), path,
                         items=items, identity={"model": "two_tower", "split_fingerprint": "f1"})
    return path, items


# Index files -----------------------------------------------------------------------------------

def test_index_of_other_embeddings_with_same_size_is_refused(saved):
    path, items = saved
    with pytest.raises(IndexMismatchError, match="other item embeddings") as e:
        index_lib.load_index(path, items=_unit_rows(200, 8, 1))
    assert str(path) in str(e.value) and "meta.json" in str(e.value)


def test_index_checked_against_an_embeddings_file_names_both_files(saved, tmp_path):
    path, _ = saved
    np.save(tmp_path / "item_embeddings.npy", _unit_rows(200, 8, 1))
    with pytest.raises(IndexMismatchError) as e:
        index_lib.load_index(path, items=tmp_path / "item_embeddings.npy")
    assert str(path) in str(e.value) and str(tmp_path / "item_embeddings.npy") in str(e.value)


def test_embeddings_of_another_shape_are_refused(saved):
    path, items = saved
    with pytest.raises(IndexMismatchError, match=r"shape \(199, 8\)"):
        index_lib.load_index(path, items=items[:-1])


def test_wrong_items_checksum_is_refused(saved):
    path, _ = saved
    with pytest.raises(IndexMismatchError, match="given checksum"):
        index_lib.load_index(path, items_sha256="0" * 64)


def test_index_of_another_run_is_refused(saved):
    path, items = saved
    with pytest.raises(IndexMismatchError, match="split_fingerprint: index 'f1', expected 'f2'"):
        index_lib.load_index(path, items=items, identity={"split_fingerprint": "f2"})


def test_save_index_with_another_item_table_is_refused(tmp_path):
    items = _unit_rows(50, 8, 0)
    with pytest.raises(IndexMismatchError, match="passed to save_index"):
        index_lib.save_index(index_lib.build_index(items), tmp_path / "i.faiss",
                             items=_unit_rows(50, 8, 1))
    assert not list(tmp_path.iterdir())  # Nothing written.


def test_index_without_sidecar_is_refused(saved):
    path, _ = saved
    index_lib.sidecar_path(path).unlink()
    with pytest.raises(IndexFileError, match="meta.json is missing.*save_index"):
        index_lib.load_index(path)


def test_corrupt_sidecar_is_refused(saved):
    path, _ = saved
    index_lib.sidecar_path(path).write_text('{"format": 1, "ntotal"')
    with pytest.raises(IndexFileError, match="unreadable index sidecar"):
        index_lib.load_index(path)
    index_lib.sidecar_path(path).write_text('{"format": 1}')
    with pytest.raises(IndexFileError, match="missing.*index_sha256"):
        index_lib.load_index(path)


def test_stale_offset_beside_an_uncentred_index_is_refused(tmp_path):
    items = _unit_rows(50, 8, 0)
    path = tmp_path / "index.faiss"
    index_lib.save_index(index_lib.build_index(items), path, items=items)
    np.save(index_lib.offset_path(path), items.mean(0))
    with pytest.raises(IndexMismatchError, match="stale offset.*uncentred"):
        index_lib.load_index(path)


def test_offset_of_another_index_is_refused(saved):
    path, items = saved
    np.save(index_lib.offset_path(path), (items + 0.1).mean(0).astype(np.float32))
    with pytest.raises(IndexMismatchError, match="stale offset") as e:
        index_lib.load_index(path)
    assert str(index_lib.offset_path(path)) in str(e.value)


def test_offset_of_wrong_dimension_is_refused_before_numpy_fails(saved):
    path, _ = saved
    np.save(index_lib.offset_path(path), np.zeros(5, np.float32))
    with pytest.raises(IndexMismatchError, match=r"float32 \(5,\).*float32 \(8,\)"):
        index_lib.load_index(path)


def test_missing_offset_of_a_centred_index_is_refused(saved):
    path, _ = saved
    index_lib.offset_path(path).unlink()
    with pytest.raises(IndexFileError, match="offset.npy is missing"):
        index_lib.load_index(path)


def test_unreadable_offset_is_refused(saved):
    path, _ = saved
    index_lib.offset_path(path).write_bytes(b"not npy")
    with pytest.raises(IndexFileError, match="unreadable centring offset"):
        index_lib.load_index(path)


def test_truncated_index_file_names_the_path(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(IndexFileError, match="truncated or changed") as e:
        index_lib.load_index(path)
    assert str(path) in str(e.value) and "Error in" not in str(e.value)


def test_changed_index_file_of_same_size_is_refused(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="SHA-256 differs"):
        index_lib.load_index(path)


def test_unreadable_index_file_gives_no_faiss_assert_text(saved):
    path, _ = saved
    path.write_bytes(b"garbage, not an index")
    meta = json.loads(index_lib.sidecar_path(path).read_text())
    meta.update(index_bytes=path.stat().st_size,  # A sidecar that agrees with the garbage.
                index_sha256=index_lib._file_sha256(path))
    index_lib.sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="not a readable FAISS index") as e:
        index_lib.load_index(path)
    assert str(path) in str(e.value) and "Error in" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_missing_index_file_names_the_path(tmp_path):
    with pytest.raises(IndexFileError, match="no such index file"):
        index_lib.load_index(tmp_path / "nothing.faiss")


def test_in_memory_index_of_another_model_is_refused(retriever):
    other = _model(1, history=True)  # Same sizes, other weights.
    with pytest.raises(IndexMismatchError, match="this model's item embeddings"):
        Retriever(retriever.model, index_lib.build_index(other.ranking_embeddings()[1]))


# User ids --------------------------------------------------------------------------------------

def test_user_id_beyond_range_is_refused(retriever):
    with pytest.raises(QueryError, match=rf"user ids: 1 id\(s\) outside \[0, {NUM_USERS}\): "
                                         rf"{NUM_USERS + 500}"):
        retriever.retrieve(NUM_USERS + 500)


def test_negative_user_id_is_refused(retriever):
    with pytest.raises(QueryError, match=r"outside \[0, 10\): -1"):
        retriever.retrieve([3, -1])


def test_user_id_wrapping_past_int32_is_refused(retriever):
    with pytest.raises(QueryError, match="4294967299"):
        retriever.retrieve(2**32 + 3)
    with pytest.raises(QueryError, match="4294967299"):
        retriever.encode_user_ids(np.array([2**32 + 3], np.uint64))


def test_user_id_beyond_int64_is_refused(retriever):
    with pytest.raises(QueryError, match="outside"):
        retriever.retrieve([1, 2**70])


def test_float_user_id_is_refused_not_read_as_a_feature_row(retriever):
    with pytest.raises(QueryError, match="float scalar"):
        retriever.retrieve(3.0)
    with pytest.raises(QueryError, match="5 columns"):
        retriever.retrieve(np.array([3.0]))


def test_float_user_ids_forced_as_ids_are_refused(retriever):
    with pytest.raises(QueryError, match="ids must be integers.*float64.*3.0"):
        retriever.retrieve([3.0, 4.0], features=False)


def test_bool_and_string_user_ids_are_refused(retriever):
    with pytest.raises(QueryError, match="dtype bool"):
        retriever.retrieve(True)
    with pytest.raises(QueryError, match="dtype <U1"):
        retriever.retrieve("3")


def test_ragged_user_input_is_refused(retriever):
    with pytest.raises(QueryError, match="user"):
        retriever.retrieve([[1, 2], [3]])


# Histories and seen items ----------------------------------------------------------------------

ONE_ROW = np.zeros((1, USER_DIM))  # One raw feature row (a feature query).


def test_history_item_beyond_catalogue_is_refused(retriever):
    with pytest.raises(QueryError, match=rf"history_items\[0\]: .*outside \[0, {NUM_ITEMS}\): "
                                         rf"{NUM_ITEMS + 500}"):
        retriever.retrieve(ONE_ROW, history_items=[[1, NUM_ITEMS + 500]])


def test_negative_history_item_is_refused(retriever):
    with pytest.raises(QueryError, match=r"history_items\[1\]: .*-1"):
        retriever.retrieve(np.zeros((2, USER_DIM)), history_items=[[1], [-1]])


def test_float_history_item_is_refused(retriever):
    with pytest.raises(QueryError, match=r"history_items\[0\]: ids must be integers"):
        retriever.retrieve(ONE_ROW, history_items=[[1.0, 2.5]])


def test_history_longer_than_the_position_weights_is_refused(retriever):
    with pytest.raises(QueryError, match=f"at most {HISTORY} positions"):
        retriever.retrieve(ONE_ROW, history_items=[list(range(HISTORY + 1))])


def test_history_rows_not_matching_the_queries_are_refused(retriever):
    with pytest.raises(QueryError, match="history_items has 2 rows for 1 queries"):
        retriever.retrieve(ONE_ROW, history_items=[[1], [2]])


def test_history_for_a_model_without_history_tower_is_refused():
    model = _model(0)
    scaler = Standardizer.fit(np.ones((3, USER_DIM)))
    plain = Retriever(model, index_lib.build_index(model.ranking_embeddings()[1]),
                      user_scaler=scaler)
    with pytest.raises(QueryError, match="no history tower"):
        plain.retrieve(np.zeros(USER_DIM), history_items=[[1]])


def test_history_or_seen_items_with_id_queries_are_refused(retriever):
    with pytest.raises(QueryError, match="apply to feature queries"):
        retriever.retrieve(3, history_items=[[1]])
    with pytest.raises(QueryError, match="apply to feature queries"):
        retriever.retrieve(3, seen_items=[[1]])


def test_seen_item_out_of_range_is_refused(retriever):
    with pytest.raises(QueryError, match=r"seen_items\[0\]: .*outside.*30"):
        retriever.retrieve(ONE_ROW, seen_items=[[NUM_ITEMS]])


def test_model_history_ids_out_of_range_are_refused():
    users = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"history item id\(s\) outside \[0, 4\)"):
        TwoTower(users, np.zeros((4, 2), np.float32), rngs=nnx.Rngs(0), hidden_dim=4, dim=2,
                 history_ids=np.array([[0, 4], [1, 2]]), history_mask=np.ones((2, 2)))


def test_model_user_inputs_of_wrong_shape_or_ids_are_refused():
    model = _model(0, history=True)

    class Inputs:
        user = np.zeros((NUM_USERS, USER_DIM + 1), np.float32)
        history_ids = np.zeros((NUM_USERS, HISTORY), np.int32)
        history_mask = np.ones((NUM_USERS, HISTORY), np.float32)

    with pytest.raises(ValueError, match=rf"user features \(10, 6\) ≠ \(10, {USER_DIM}\)"):
        model.set_user_inputs(Inputs)
    Inputs.user = np.zeros((NUM_USERS, USER_DIM), np.float32)
    Inputs.history_ids = np.full((NUM_USERS, HISTORY), -1, np.int32)
    with pytest.raises(ValueError, match="history item id"):
        model.set_user_inputs(Inputs)


# Feature rows and k ----------------------------------------------------------------------------

def test_feature_row_of_wrong_width_is_refused(retriever):
    with pytest.raises(QueryError, match=f"must have {USER_DIM} columns.*got 3"):
        retriever.retrieve(np.zeros((2, 3)))


def test_feature_rows_of_wrong_rank_are_refused(retriever):
    with pytest.raises(QueryError, match=r"shape \(1, 1, 5\)"):
        retriever.retrieve(np.zeros((1, 1, USER_DIM)))


def test_non_finite_feature_row_is_refused(retriever):
    rows = np.zeros((3, USER_DIM))
    rows[2, 1] = np.nan
    with pytest.raises(QueryError, match=r"feature row\(s\) 2 hold NaN"):
        retriever.retrieve(rows)


def test_scaler_of_another_width_is_refused(retriever):
    with pytest.raises(ValueError, match=f"standardises 7 columns.*have {USER_DIM}"):
        Retriever(retriever.model, retriever.index,
                  user_scaler=Standardizer.fit(np.ones((2, 7))))


def test_bad_k_is_refused(retriever):
    for k in (0, -3, 2.5, True, "10"):
        with pytest.raises(QueryError, match="k must be a positive integer"):
            retriever.retrieve(1, k=k)


def test_k_beyond_the_catalogue_gives_the_same_shape_with_and_without_exclude_seen(retriever):
    k = NUM_ITEMS + 20
    with_seen = retriever.retrieve([0, 1], k=k)
    without = retriever.retrieve([0, 1], k=k, exclude_seen=False)
    assert with_seen.items.shape == without.items.shape == (2, k)
    assert np.all(without.items[:, NUM_ITEMS:] == -1)
    assert np.all(np.isneginf(without.scores[:, NUM_ITEMS:]))
