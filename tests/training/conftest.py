"""Fixtures: small train/val splits of the planted problem."""

import pytest

from tests.tasks.planted import planted_ratings


@pytest.fixture
def train_columns():
    return planted_ratings(1000, seed=0)


@pytest.fixture
def val_columns():
    return planted_ratings(200, seed=1)
