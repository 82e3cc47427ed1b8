#!/bin/bash
# Speed measurements on the AMD EPYC (Zen 4), nothing else running on the machine.
# Run from anywhere; paths are taken from the environment (see ../README.md):
#   DATA       folder holding the extracted cifar-100-python/ folder
#   REFERENCE  the write-up's training script (reference_train.py)
#   PHOTOS     folder of 1,000 image files made by benchmarks/make_photo_folder.py
#   OUT        scratch folder for exports and predictions
#   RUNS       folder holding the run folders used below (default: runs)
#   OLD        a checkout of commit b7bb047 (the code before the convolution fusion)
# The scripts/*.py probes called below were removed from the tree after these runs (their code
# is in git history; their conclusions are in docs/performance.md).
set -u
cd "$(dirname "$0")/../../../.."
here=$(pwd)
D=$here/docs/results/speed/2026-11-29-epyc-zen4-evaluate-fused
B=$here/.venv/bin
R=${RUNS:-$here/runs}
rm -rf $OUT/exp $OUT/pred.csv $OUT/ab
mkdir -p $OUT/ab
# evaluate before (b7bb047, checked out in $OLD) and after the fusion, alternating
for i in 1 2 3 4; do
  for v in before after; do
    if [ $v = before ]; then cd $OLD; else cd "$here"; fi
    $B/python -m cifarnet evaluate $R/e10-default/best.pt --data-dir $DATA --out $OUT/ab/$v-$i.csv > /dev/null 2>&1
    python3 -c "import csv;r=list(csv.DictReader(open('$OUT/ab/$v-$i.csv')))[0];print('round $i, $v: top1', r['top1'], 'images/s', round(float(r['images_per_second']),1))" >> $D/fusion-ab.txt
  done
done
cd "$here"
cat $D/fusion-ab.txt
$B/python benchmarks/compare_reference.py --data-dir $DATA --reference $REFERENCE --evaluate $R/e10-default/best.pt --rounds 5 > $D/compare-evaluate.json
cat $D/compare-evaluate.json
for b in 1 256; do
  $B/cifarnet benchmark $R/e35-default/best.pt --no-train --batch-size $b --seconds 5 --out $D/inference-b$b.csv > $D/inference-b$b.txt 2>&1
  cat $D/inference-b$b.txt
done
$B/cifarnet export $R/e35-default/best.pt --onnx --torchscript --data-dir $DATA --out $OUT/exp/ > $D/export-e35.txt 2>&1
cat $D/export-e35.txt
s=$(date +%s.%N)
$B/cifarnet predict $PHOTOS --model $R/e35-default/best.pt --out $OUT/pred.csv > $D/predict-1000.txt 2>&1
rc=$?
e=$(date +%s.%N)
echo "exit $rc, wall $(echo "$e - $s" | bc) s" >> $D/predict-1000.txt
tail -4 $D/predict-1000.txt
$B/python scripts/evaluate_variants.py $R/e10-default/best.pt --data-dir $DATA --rounds 3 > $D/evaluate_variants.txt 2>&1
cat $D/evaluate_variants.txt
$B/python scripts/profile_evaluate.py $R/e10-default/best.pt --data-dir $DATA > $D/profile-evaluate.txt 2>&1
tail -3 $D/profile-evaluate.txt
