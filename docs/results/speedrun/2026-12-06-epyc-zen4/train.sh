#!/usr/bin/env bash
# The speedrun recipe's runs of this folder, from the repository root:
#   DATA=<folder holding cifar-100-python/ or its .tar.gz> docs/results/speedrun/2026-12-06-epyc-zen4/train.sh
# Each seed of SEEDS (default "0 1") trains in turn on all cores; its best.pt is then evaluated
# with the 6-view --tta-shift 1 (training itself ends with the single-view test). Run folders go
# to runs/, logs and evaluation files here.
set -euo pipefail
here=$(dirname "$0")
cifarnet=${CIFARNET:-.venv/bin/cifarnet}
mkdir -p "$here/eval"
for seed in ${SEEDS:-0 1}; do
    "$cifarnet" train --recipe speedrun --seed "$seed" --data-dir "$DATA" --runs-dir runs \
        --name "speedrun-seed$seed" --quiet > "$here/speedrun-seed$seed.log" 2>&1
    "$cifarnet" evaluate "runs/speedrun-seed$seed/best.pt" --data-dir "$DATA" --tta-shift 1 \
        --out "$here/eval/seed$seed-tta-shift1.csv" --force >> "$here/speedrun-seed$seed.log" 2>&1
done
