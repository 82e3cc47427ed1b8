#!/usr/bin/env bash
# The model-zoo measurements of this folder, from the repository root:
#   DATA=<folder holding cifar-100-python/ or its .tar.gz> docs/results/zoo/2026-12-05-epyc-zen4/measure.sh
# Each output file starts and ends with `uptime` (the load average of a shared machine). One
# intra-op thread: the 2 cores were shared with another job, and with 2 threads the training
# rounds of one variant ranged from 53 to 250 images/s (augment_cost-2threads-contended.txt).
set -euo pipefail
here=$(dirname "$0")
python=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1
lscpu > "$here/machine.txt"
{
    uptime
    "$python" benchmarks/augment_cost.py --data-dir "$DATA" --train --rounds 5 --steps 10
    uptime
} 2>&1 | tee "$here/augment_cost.txt"
{
    uptime
    "$python" benchmarks/zoo_speed.py "$here/speed" --batch-size 16 --seconds 0.5
    uptime
} 2>&1 | tee "$here/zoo_speed.txt"
