#!/bin/bash
# Speed measurements on an Intel Xeon with AMX, nothing else running on the machine.
# The checkpoint used for every row is a 10-epoch default-recipe run (runs/e10-default; the
# AMD EPYC folders timed b and c on a 35-epoch run of the same network: same shapes, same work
# per image).
# Run from anywhere; paths are taken from the environment (see ../README.md):
#   DATA       folder holding the extracted cifar-100-python/ folder
#   REFERENCE  the write-up's training script (reference_train.py)
#   PHOTOS     folder of 1,000 image files made by benchmarks/make_photo_folder.py
#   OUT        scratch folder for exports and predictions
#   RUNS       folder holding the run folders used below (default: runs)
# The scripts/*.py probes called below were removed from the tree after these runs (their code
# is in git history; their conclusions are in docs/performance.md).
set -u
cd "$(dirname "$0")/../../../.."
here=$(pwd)
D=$here/docs/results/speed/2026-11-29-xeon-amx
B=$here/.venv/bin
R=${RUNS:-$here/runs}
rm -rf $OUT/exp $OUT/pred.csv
mkdir -p $OUT
# the machine: an Intel Xeon with AMX
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
$B/python benchmarks/compare_reference.py --data-dir $DATA --reference $REFERENCE --evaluate $R/e10-default/best.pt --rounds 5 > $D/compare-evaluate.json
cat $D/compare-evaluate.json
$B/python scripts/profile_evaluate.py $R/e10-default/best.pt --data-dir $DATA --peak-gmacs $peak > $D/profile-evaluate.txt 2>&1
tail -5 $D/profile-evaluate.txt
for b in 1 256; do
  $B/cifarnet benchmark $R/e10-default/best.pt --no-train --batch-size $b --seconds 5 --out $D/inference-b$b.csv --force > $D/inference-b$b.txt 2>&1
  cat $D/inference-b$b.txt
done
$B/cifarnet export $R/e10-default/best.pt --onnx --torchscript --data-dir $DATA --out $OUT/exp/ > $D/export-e10.txt 2>&1
cat $D/export-e10.txt
s=$(date +%s.%N)
$B/cifarnet predict $PHOTOS --model $R/e10-default/best.pt --out $OUT/pred.csv > $D/predict-1000.txt 2>&1
rc=$?
e=$(date +%s.%N)
echo "exit $rc, wall $(echo "$e - $s" | bc) s" >> $D/predict-1000.txt
tail -4 $D/predict-1000.txt
