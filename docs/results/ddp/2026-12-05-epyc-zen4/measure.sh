#!/usr/bin/env bash
# Training images/s on a 2-core CPU: 2 processes x 1 thread (torchrun, gloo) against
# 1 process x 2 threads, fast recipe, one epoch of CIFAR-100, two rounds in alternation.
# DATA: the folder holding cifar-100-python.tar.gz; OUT: where runs and logs go.
set -euo pipefail
: "${DATA:?set DATA to the folder holding cifar-100-python.tar.gz}"
OUT=${OUT:-ddp-measure}
mkdir -p "$OUT"
common=(--recipe fast --epochs 1 --data-dir "$DATA" --runs-dir "$OUT/runs" --quiet)
uptime | tee "$OUT/uptime-before.txt"
for round in 1 2; do
    OMP_NUM_THREADS=2 cifarnet train "${common[@]}" --name "one-x2-$round" \
        > "$OUT/one-x2-$round.log" 2>&1
    OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m cifarnet train "${common[@]}" \
        --name "two-x1-$round" > "$OUT/two-x1-$round.log" 2>&1
done
uptime | tee "$OUT/uptime-after.txt"
for run in "$OUT"/runs/*; do
    echo "$(basename "$run") $(tail -n 1 "$run/metrics.csv" | cut -d, -f8,9,10)"
done | tee "$OUT/images-per-second.txt"
