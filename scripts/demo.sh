#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults (tune/configs/demo.yaml) on this machine, in minutes on 2 CPU
# cores: the synthetic MANO hand and a small synthetic BlurHand-format dataset (built once into the cache,
# $HMH_CACHE_DIR or ~/.cache/hmh), a local Ray Tune search of 4 two-stage trials (Optuna TPE, ASHA stops the poor
# ones), the best configuration retrained and evaluated on the test split, and the result files in results/demo.
# Extra arguments go to `python -m tune.search` (e.g. --set search.num_samples=6). A previous results/demo is
# kept as results/demo.previous.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=${RAY_TRAIN_HEALTH_CHECK_INTERVAL_S:-0.5}  # Train's metric poll (default 2 s)

if [ -e results/demo ]; then
    rm -rf results/demo.previous
    mv results/demo results/demo.previous
    echo "demo: moved the previous results/demo to results/demo.previous"
fi
SECONDS=0
echo "demo: search + final retrain on tune/configs/demo.yaml (the dataset is built on the first run)"
"$PY" -m tune.search --config tune/configs/demo.yaml "$@"
echo "demo: finished in $((SECONDS / 60)) min $((SECONDS % 60)) s; summary again: $PY -m hmh.cli results summarize results/demo"
