#!/bin/bash
# Issue 3 closing measurements, session 11, one sitting, nothing else running.
set -u
cd /work/main
D=/work/main/docs/results/speed/2026-11-29-epyc-zen4-dot-product-ceiling
B=/work/main/.venv/bin
R=/tmp/m/runs
rm -rf /tmp/s11/exp /tmp/s11/pred.csv
mkdir -p /tmp/s11
# this CPU's multiply-accumulate ceiling per precision, all cores
$B/python scripts/dot_product_peak.py --seconds 3 > $D/dot-product-peak.txt 2>&1
cat $D/dot-product-peak.txt
peak=$(tail -1 $D/dot-product-peak.txt | python3 -c "import json,sys; print(json.load(sys.stdin)['bf16']['gmacs'])")
$B/python scripts/compare_reference.py --data-dir /tmp/cifar --reference ../shared/reference/reference_train.py --evaluate $R/e10-default/best.pt --rounds 5 > $D/compare-evaluate.json
cat $D/compare-evaluate.json
$B/python scripts/profile_evaluate.py $R/e10-default/best.pt --data-dir /tmp/cifar --peak-gmacs $peak > $D/profile-evaluate.txt 2>&1
cat $D/profile-evaluate.txt
for b in 1 256; do
  $B/cifarnet benchmark $R/e35-default/best.pt --no-train --batch-size $b --seconds 5 --out $D/inference-b$b.csv > $D/inference-b$b.txt 2>&1
  cat $D/inference-b$b.txt
done
$B/cifarnet export $R/e35-default/best.pt --onnx --torchscript --data-dir /tmp/cifar --out /tmp/s11/exp/ > $D/export-e35.txt 2>&1
cat $D/export-e35.txt
s=$(date +%s.%N)
$B/cifarnet predict /tmp/m/photos --model $R/e35-default/best.pt --out /tmp/s11/pred.csv > $D/predict-1000.txt 2>&1
rc=$?
e=$(date +%s.%N)
echo "exit $rc, wall $(echo "$e - $s" | bc) s" >> $D/predict-1000.txt
tail -4 $D/predict-1000.txt
