"""Fixtures shared by the analysis tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from tests.analysis.planted import Planted, make_planted


@pytest.fixture(autouse=True)
def _single_native_thread() -> Iterator[None]:
    # t-SNE's OpenMP/BLAS threads spin-wait for cores that other processes hold on the small
    # shared CI machines, making runs on a few dozen points 10-100x slower; one thread is fast.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def planted() -> Planted:
    return make_planted()
