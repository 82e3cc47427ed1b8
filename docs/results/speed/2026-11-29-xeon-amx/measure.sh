#!/bin/bash
# Issue 3 closing measurements, session 12, one sitting, nothing else running.
# This sitting's machine was new: its only checkpoint is a fresh 10-epoch default-recipe run
# (runs/e10-default), used for every row (earlier sittings timed b and c on a 35-epoch run of
# the same network: same shapes, same work per image). The 1,000 photos come from
# scripts/make_photo_folder.py.
set -u
cd /work/main
D=/work/main/docs/results/speed/2026-11-29-xeon-amx
B=/work/main/.venv/bin
R=/tmp/m/runs
rm -rf /tmp/s12/exp /tmp/s12/pred.csv
mkdir -p /tmp/s12
# the machine of this sitting: an Intel Xeon with AMX (earlier sittings: an AMD EPYC without)
lscpu > $D/machine.txt
# which oneDNN kernels evaluate's bf16 convolutions use here (amx or avx512)
ONEDNN_VERBOSE=1 $B/python -c "
import torch
conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
x = torch.randn(1000, 64, 16, 16).to(memory_format=torch.channels_last)
with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
    conv(x)
" 2>&1 | grep -m3 "exec,cpu,convolution" > $D/onednn-conv-kernel.txt
cat $D/onednn-conv-kernel.txt
# this CPU's multiply-accumulate ceiling per precision with AVX-512 instructions, all cores
$B/python scripts/dot_product_peak.py --seconds 3 > $D/dot-product-peak.txt 2>&1
cat $D/dot-product-peak.txt
peak=$(tail -1 $D/dot-product-peak.txt | python3 -c "import json,sys; print(json.load(sys.stdin)['bf16']['gmacs'])")
$B/python scripts/compare_reference.py --data-dir /tmp/cifar --reference ../shared/reference/reference_train.py --evaluate $R/e10-default/best.pt --rounds 5 > $D/compare-evaluate.json
cat $D/compare-evaluate.json
$B/python scripts/profile_evaluate.py $R/e10-default/best.pt --data-dir /tmp/cifar --peak-gmacs $peak > $D/profile-evaluate.txt 2>&1
tail -5 $D/profile-evaluate.txt
for b in 1 256; do
  $B/cifarnet benchmark $R/e10-default/best.pt --no-train --batch-size $b --seconds 5 --out $D/inference-b$b.csv --force > $D/inference-b$b.txt 2>&1
  cat $D/inference-b$b.txt
done
$B/cifarnet export $R/e10-default/best.pt --onnx --torchscript --data-dir /tmp/cifar --out /tmp/s12/exp/ > $D/export-e10.txt 2>&1
cat $D/export-e10.txt
s=$(date +%s.%N)
$B/cifarnet predict /tmp/m/photos --model $R/e10-default/best.pt --out /tmp/s12/pred.csv > $D/predict-1000.txt 2>&1
rc=$?
e=$(date +%s.%N)
echo "exit $rc, wall $(echo "$e - $s" | bc) s" >> $D/predict-1000.txt
tail -4 $D/predict-1000.txt
