#!/usr/bin/env bash
# The 30-epoch zoo runs of this folder, from the repository root:
#   DATA=<folder holding cifar-100-python/ or its .tar.gz> [MODEL=resnet56] docs/results/zoo/2026-12-05-epyc-zen4/epochs30/train.sh
# The two runs train side by side with one intra-op thread each, one per core; run folders go
# to runs/, their logs here.
set -euo pipefail
here=$(dirname "$0")
cifarnet=${CIFARNET:-.venv/bin/cifarnet}
model=${MODEL:-resnet20}
export OMP_NUM_THREADS=1
for augment in none trivialaugment; do
    "$cifarnet" train --model "$model" --recipe default --epochs 30 --augment "$augment" \
        --data-dir "$DATA" --runs-dir runs --name "$model-$augment" --quiet \
        > "$here/$model-$augment.log" 2>&1 &
done
wait
