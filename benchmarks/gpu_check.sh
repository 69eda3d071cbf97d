#!/usr/bin/env bash
# The device check on a GPU machine without network: installs the carried wheels of the Python
# packages that are missing, points the data cache at the carried ML-100K, then runs
# `python -m benchmarks.gpu_check` (see its docstring and docs/benchmarks.md, "Device check").
#
#   bash benchmarks/gpu_check.sh            # full check, ≤ 8 minutes on one GPU
#   bash benchmarks/gpu_check.sh --smoke    # tiny shapes, PyTorch on the CPU: any machine
#
# Carried folder (default .gpu_check/ in the repository root, or $GPU_CHECK_CARRY):
#   wheels/   wheels of the packages the machine lacks (ml_collections, faiss-cpu, ...)
#   data/     a copy of the recsys_jax data cache holding ml-100k-recbole/
# Output: $OUT when set, else workdirs/gpu_check (gpu_check.json, gpu_check.md).
# Extra arguments go to benchmarks.gpu_check (--budget_s, --parts, --torch_device).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
CARRY=${GPU_CHECK_CARRY:-.gpu_check}
OUT_DIR=${OUT:-workdirs/gpu_check}

# Modules the check imports, and the distribution that provides each (import name=wheel name).
NEEDED="ml_collections=ml_collections faiss=faiss_cpu tensorboardX=tensorboardX
absl=absl_py flax=flax optax=optax orbax.checkpoint=orbax_checkpoint scipy=scipy
pandas=pandas sklearn=scikit_learn matplotlib=matplotlib"
missing=()
for pair in $NEEDED; do
  module=${pair%%=*}
  if ! "$PYTHON" -c "import $module" 2>/dev/null; then missing+=("${pair#*=}"); fi
done
if ((${#missing[@]})); then
  echo "[gpu_check.sh] missing: ${missing[*]}"
  wheels=()
  for name in "${missing[@]}"; do
    # Wheel files spell the name with underscores; faiss may come as faiss_gpu* instead.
    pattern="$CARRY/wheels/${name}-*.whl"
    [[ $name == faiss_cpu ]] && pattern="$CARRY/wheels/faiss_*.whl"
    found=$(compgen -G "$pattern" | head -n 1 || true)
    if [[ -z $found ]]; then
      echo "[gpu_check.sh] no wheel for $name in $CARRY/wheels: the parts that need it fail" >&2
    else
      wheels+=("$found")
    fi
  done
  if ((${#wheels[@]})); then
    site=/tmp/gpu_check_site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "${wheels[@]}"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
if [[ -d $CARRY/data ]]; then
  export RECSYS_JAX_DATA="$PWD/$CARRY/data"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" -m benchmarks.gpu_check --output_dir="$OUT_DIR" "$@"
