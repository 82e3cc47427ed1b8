#!/usr/bin/env bash
# The speedrun recipe's runs of this folder, from the repository root:
#   DATA=<folder holding cifar-100-python/ or its .tar.gz> docs/results/speedrun/2026-12-06-epyc-zen4/train.sh
# Each seed of SEEDS (default "0 1") trains in turn on all cores; its best.pt is then evaluated
# with the 6-view --tta-shift 1 (training itself ends with the single-view test). Run folders go
# to runs/, logs and evaluation files here. TRAIN_ARGS adds flags to train and TAG prefixes the
# names: the recipe's runs (all 50,000 training images) are TAG=all50k-, the runs holding out
# 5,000 images for validation TRAIN_ARGS="--val-size 5000" with no TAG. OUT names another
# folder for the logs and evaluation files (another machine's results).
set -euo pipefail
here=${OUT:-$(dirname "$0")}
cifarnet=${CIFARNET:-.venv/bin/cifarnet}
mkdir -p "$here/eval"
tag=${TAG:-}
for seed in ${SEEDS:-0 1}; do
    run="speedrun-${tag}seed$seed"
    # TRAIN_ARGS is split into words on purpose: it holds whole flags
    # shellcheck disable=SC2086
    "$cifarnet" train --recipe speedrun --seed "$seed" --data-dir "$DATA" --runs-dir runs \
        --name "$run" --quiet ${TRAIN_ARGS:-} > "$here/$run.log" 2>&1
    "$cifarnet" evaluate "runs/$run/best.pt" --data-dir "$DATA" --tta-shift 1 \
        --out "$here/eval/${tag}seed$seed-tta-shift1.csv" --force >> "$here/$run.log" 2>&1
done
