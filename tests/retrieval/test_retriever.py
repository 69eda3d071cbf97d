"""Retriever.retrieve: excludes seen items, agrees with brute force, single and batched."""

import numpy as np
import pytest
import scipy.sparse as sp
from flax import nnx

from recsys_jax.data.features import Standardizer
from recsys_jax.models.two_tower import TwoTower
from recsys_jax.retrieval import index as index_lib
from recsys_jax.retrieval.retriever import Retriever

NUM_USERS, NUM_ITEMS = 12, 40


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "history"])
def setup(request):
    rng = np.random.default_rng(0)
    raw_users = rng.normal(3.0, 2.0, size=(NUM_USERS, 5))
    scaler = Standardizer.fit(raw_users)
    seen = sp.random_array((NUM_USERS, NUM_ITEMS), density=0.2, random_state=1,
                           format="csr").astype(bool)
    history = None
    if request.param:
        history = (rng.integers(0, NUM_ITEMS, (NUM_USERS, 4)).astype(np.int32),
                   np.ones((NUM_USERS, 4), np.float32))
    model = TwoTower(scaler(raw_users), rng.normal(size=(NUM_ITEMS, 3)).astype(np.float32),
                     rngs=nnx.Rngs(0), hidden_dim=16, dim=8,
                     history_ids=None if history is None else history[0],
                     history_mask=None if history is None else history[1])
    arrays = model.export_arrays()
    retriever = Retriever(model, index_lib.build_index(arrays["item_embeddings"]),
                          user_scaler=scaler, seen=seen)
    return retriever, arrays, seen, raw_users, history


def _brute_force(arrays, user, seen_items, k):
    scores = arrays["item_embeddings"] @ arrays["user_embeddings"][user]
    scores[list(seen_items)] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return order[np.isfinite(scores[order])]


def test_single_user_excludes_seen_and_matches_brute_force(setup):
    retriever, arrays, seen, _, _ = setup
    for user in range(NUM_USERS):
        result = retriever.retrieve(user, k=10)
        assert result.items.shape == (1, 10)
        seen_items = set(seen[[user]].indices.tolist())
        assert not seen_items & set(result.items[0].tolist())
        np.testing.assert_array_equal(result.items[0], _brute_force(arrays, user, seen_items,
                                                                    10))
        assert np.all(np.diff(result.scores[0]) <= 1e-6)


def test_batched_equals_single(setup):
    retriever = setup[0]
    batch = retriever.retrieve([3, 0, 7], k=15)
    for row, user in enumerate([3, 0, 7]):
        np.testing.assert_array_equal(batch.items[row], retriever.retrieve(user, k=15).items[0])


def test_without_exclusion_and_padding(setup):
    retriever, arrays, _, _, _ = setup
    full = retriever.retrieve(2, k=NUM_ITEMS, exclude_seen=False)
    np.testing.assert_array_equal(np.sort(full.items[0]), np.arange(NUM_ITEMS))
    short = retriever.retrieve(2, k=NUM_ITEMS)  # Seen items removed: -1 padding at the end.
    n_seen = retriever.seen[[2]].nnz
    assert np.all(short.items[0, NUM_ITEMS - n_seen:] == -1)
    assert np.all(np.isneginf(short.scores[0, NUM_ITEMS - n_seen:]))


def test_k_beyond_the_catalogue_pads_to_k_columns_on_both_paths(setup):
    retriever = setup[0]
    k = NUM_ITEMS + 7
    plain = retriever.retrieve([2, 5], k=k, exclude_seen=False)
    excluded = retriever.retrieve([2, 5], k=k)
    assert plain.items.shape == excluded.items.shape == (2, k)
    assert plain.scores.shape == excluded.scores.shape == (2, k)
    for row, user in enumerate([2, 5]):
        np.testing.assert_array_equal(np.sort(plain.items[row, :NUM_ITEMS]), np.arange(NUM_ITEMS))
        assert np.all(plain.items[row, NUM_ITEMS:] == -1)
        assert np.all(np.isneginf(plain.scores[row, NUM_ITEMS:]))
        assert np.all(np.isfinite(plain.scores[row, :NUM_ITEMS]))
        n_left = NUM_ITEMS - retriever.seen[[user]].nnz
        assert np.all(excluded.items[row, n_left:] == -1)
        assert np.all(excluded.items[row, :n_left] >= 0)
    np.testing.assert_array_equal(plain.items[:, :10],
                                  retriever.retrieve([2, 5], k=10, exclude_seen=False).items)


def test_empty_batch_gives_empty_result(setup):
    result = setup[0].retrieve(np.zeros(0, np.int64), k=5)
    assert result.items.shape == result.scores.shape == (0, 5)


def test_raw_features_are_encoded_with_the_training_scaler(setup):
    retriever, _, seen, raw_users, history = setup
    hist = None if history is None else [history[0][5].tolist()]
    by_features = retriever.retrieve(raw_users[5], k=10, seen_items=[seen[[5]].indices],
                                     history_items=hist)
    np.testing.assert_array_equal(by_features.items, retriever.retrieve(5, k=10).items)


def test_index_must_match_the_model(setup):
    retriever = setup[0]
    with pytest.raises(ValueError, match="catalogue has"):
        Retriever(retriever.model, index_lib.build_index(np.ones((NUM_ITEMS - 1, 8), np.float32)))
    # Same size, other vectors (reversed rows): refused by the spot check of stored rows.
    items = retriever.model.ranking_embeddings()[1]
    with pytest.raises(index_lib.IndexMismatchError, match="this model's item embeddings"):
        Retriever(retriever.model, index_lib.build_index(items[::-1]))
