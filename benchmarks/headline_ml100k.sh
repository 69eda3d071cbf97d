#!/usr/bin/env bash
# The headline table (docs/results.md): every model of this project and the peers on ML-100K,
# leave-one-out (split seed 0, ties in time in random order), test, full ranking over every item
# but the user's train and val items, scored by this project's evaluator.
#
#   benchmarks/headline_ml100k.sh [W]          # W = workdirs/headline
#
# 1. this project's models, one run each (experiments/train.py; configs chosen on validation as
#    their docs say); a run whose test_metrics.json exists is kept (delete it to redo);
# 2. the `implicit` peers (ALS, BPR, ItemKNN, tuned on validation) as runs, and their paired
#    tests against our iALS and ItemKNN (needs the peers extra: pip install -e '.[peers]');
# 3. the Keras-RS two-tower in its own environment (benchmarks/kerasrs_env.sh; $KERASRS_PY,
#    default /work/venv-kerasrs/bin/python), tuned on validation, back as a run;
# 4. experiments/compare.py over all of them, twice: first against popularity to find the best
#    model (NDCG@10), then against that model (Holm-corrected paired tests), and the sampled
#    protocol (100 negatives, SASRec's) for orientation;
# 5. benchmarks/headline_table.py: W/headline.{md,json}.
#
# Run from the repository root. Nothing runs in parallel (one training at a time).
set -euo pipefail
W=${1:-workdirs/headline}
PY=${PYTHON:-python}
KERASRS_PY=${KERASRS_PY:-/work/venv-kerasrs/bin/python}
mkdir -p "$W"

train() {  # name, config, overrides...
  local name=$1 config=$2; shift 2
  if [[ -f $W/$name/test_metrics.json ]]; then echo "keep $W/$name"; return; fi
  echo "train $name"
  "$PY" experiments/train.py --config="$config" --workdir="$W/$name" "$@" > "$W/$name.log" 2>&1
}

# 1. This project (each config's docstring and docs page say how it was chosen).
train sasrec_softmax configs/sasrec_ml100k.py
train sasrec_bce configs/sasrec_ml100k.py:bce
train two_tower configs/two_tower_ml100k.py --config.split.name=leave_one_out
train bpr configs/bpr_ml100k.py
train ease configs/ease_ml100k.py
train ease_recency configs/ease_ml100k.py:recency
train ials configs/ials_ml100k.py
train item_knn configs/item_knn_ml100k.py
train dot_mf configs/ncf_ml100k.py --config.model.name=dot_mf --config.model.dim=64 \
  --config.optimizer.weight_decay=1e-6
train neumf configs/ncf_ml100k.py --config.model.name=neumf --config.optimizer.weight_decay=1e-6

# 2. implicit (its own grids on validation; fit time: median of 3 fits after a first one),
# beside our EASE, iALS and ItemKNN refitted in the same process (the iALS-vs-ALS paired test).
if [[ ! -f $W/peers/implicit_als/run.json ]]; then
  echo "implicit peers"
  "$PY" -m benchmarks.peers_implicit --tune --repeats=3 --runs_dir="$W/peers" \
    --output_dir="$W/peers" > "$W/peers.log" 2>&1
fi

# 3. Keras-RS (its own environment; tuning grid: dim {32, 64, 128} x lr {1e-3, 3e-3}).
if [[ ! -f $W/kerasrs/run/run.json ]]; then
  echo "keras-rs peer"
  [[ -x $KERASRS_PY ]] || benchmarks/kerasrs_env.sh "$(dirname "$(dirname "$KERASRS_PY")")"
  "$PY" -m benchmarks.kerasrs_peer export --dir="$W/kerasrs"
  "$KERASRS_PY" benchmarks/kerasrs_two_tower.py --data="$W/kerasrs/data.npz" \
    --out="$W/kerasrs" > "$W/kerasrs.log" 2>&1
  "$PY" -m benchmarks.kerasrs_peer import --dir="$W/kerasrs"
fi

# 4. One comparison of everything. implicit's BPR has no user refit: its test users have seen
# train only, so unequal information is allowed and the table says which row saw what.
RUNS="two_tower=$W/two_tower/run,dot_mf=$W/dot_mf/run,neumf=$W/neumf/run,bpr=$W/bpr/run"
RUNS+=",ease=$W/ease/run,ease_recency=$W/ease_recency/run,ials=$W/ials/run"
RUNS+=",item_knn=$W/item_knn/run,sasrec_softmax=$W/sasrec_softmax/run"
RUNS+=",sasrec_bce=$W/sasrec_bce/run,implicit_als=$W/peers/implicit_als"
RUNS+=",implicit_bpr=$W/peers/implicit_bpr,implicit_itemknn=$W/peers/implicit_itemknn"
RUNS+=",kerasrs_two_tower=$W/kerasrs/run"
COMMON=(--runs="$RUNS" --dataset=ml-100k --split=leave_one_out --seed=0 --k=10,100
        --baselines=popularity --rating_baselines= --allow_unequal_information)
"$PY" experiments/compare.py "${COMMON[@]}" --output_dir="$W/compare_vs_popularity" \
  > "$W/compare_vs_popularity.log" 2>&1
BEST=$("$PY" -m benchmarks.headline_table --best_of="$W/compare_vs_popularity/comparison_full.json" \
  --metric=ndcg@10)
echo "best model (test NDCG@10): $BEST"
"$PY" experiments/compare.py "${COMMON[@]}" --reference="$BEST" --output_dir="$W/compare" \
  > "$W/compare.log" 2>&1
"$PY" experiments/compare.py "${COMMON[@]}" --reference="$BEST" --protocol=sampled \
  --num_negatives=100 --k=10 --output_dir="$W/compare" > "$W/compare_sampled.log" 2>&1

# 5. The table.
"$PY" -m benchmarks.headline_table --workdir="$W" --reference="$BEST"
