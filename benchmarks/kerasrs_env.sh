#!/usr/bin/env bash
# The Keras-RS peer's own environment (never this project's dependencies): keras, keras-rs and
# jax on the CPU, in a separate virtual environment (default /work/venv-kerasrs, or $1).
# The versions measured in docs/results.md are pinned in benchmarks/requirements-kerasrs.txt.
set -euo pipefail
VENV=${1:-/work/venv-kerasrs}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$HERE/requirements-kerasrs.txt"
"$VENV/bin/python" -c "import keras, keras_rs; print('keras', keras.__version__, 'keras-rs', keras_rs.__version__)"
