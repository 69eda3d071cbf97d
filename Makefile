# The two README commands: `make demo` (set up + run the main job) and `make test`.
# Both create .venv when it is missing and install what they need; re-running is cheap
# because each install step leaves a stamp that is only redone when setup.cfg changes.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# Test extras: CI exercises the real text encoder, the PyTorch baseline and parquet exports.
TEST_EXTRAS := dev,text,baseline,parquet
# Two workers (pytest-xdist), each test file on one worker so that a file's shared fixtures (the
# 8-device sharding run, trained models) are built once; PYTEST_ARGS= runs in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: demo test clean-venv

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "recsys_jax needs Python 3.11+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --quiet --upgrade pip

$(VENV)/.stamp-core: setup.cfg pyproject.toml | $(PY)
	$(PIP) install --quiet --quiet -e .
	@touch $@

$(VENV)/.stamp-test: setup.cfg pyproject.toml constraints-test.txt | $(PY)
	$(PIP) install --quiet --quiet -c constraints-test.txt -e '.[$(TEST_EXTRAS)]'
	@touch $@

DEMO_WORKDIR := workdirs/demo_mf_ml100k

# ML-100K: statistics and split leakage reports, then MF trained from scratch (test RMSE,
# baselines, genre-cluster score, similar items for a few well-known films).
demo: $(VENV)/.stamp-core
	$(PY) experiments/prepare_data.py --dataset=ml-100k --split=all
	rm -rf $(DEMO_WORKDIR)
	$(PY) experiments/train.py --config=configs/mf_ml100k.py --workdir=$(DEMO_WORKDIR)

# The linter first (seconds), then the whole suite, slow end-to-end tests included.
test: $(VENV)/.stamp-test
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
