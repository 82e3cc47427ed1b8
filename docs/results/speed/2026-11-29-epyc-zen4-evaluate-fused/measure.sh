#!/bin/bash
# Issue 3 closing measurements, session 10, one sitting, nothing else running.
set -u
cd /work/main
D=/work/main/docs/results/speed/2026-11-29-epyc-zen4-evaluate-fused
B=/work/main/.venv/bin
R=/tmp/m/runs
rm -rf /tmp/s10/exp /tmp/s10/pred.csv /tmp/s10/ab
mkdir -p /tmp/s10/ab
# evaluate before (b7bb047, checked out in /tmp/s10/old) and after the fusion, alternating
for i in 1 2 3 4; do
  for v in before after; do
    if [ $v = before ]; then cd /tmp/s10/old; else cd /work/main; fi
    $B/python -m cifarnet evaluate $R/e10-default/best.pt --data-dir /tmp/cifar --out /tmp/s10/ab/$v-$i.csv > /dev/null 2>&1
    python3 -c "import csv;r=list(csv.DictReader(open('/tmp/s10/ab/$v-$i.csv')))[0];print('round $i, $v: top1', r['top1'], 'images/s', round(float(r['images_per_second']),1))" >> $D/fusion-ab.txt
  done
done
cd /work/main
cat $D/fusion-ab.txt
$B/python scripts/compare_reference.py --data-dir /tmp/cifar --reference ../shared/reference/reference_train.py --evaluate $R/e10-default/best.pt --rounds 5 > $D/compare-evaluate.json
cat $D/compare-evaluate.json
for b in 1 256; do
  $B/cifarnet benchmark $R/e35-default/best.pt --no-train --batch-size $b --seconds 5 --out $D/inference-b$b.csv > $D/inference-b$b.txt 2>&1
  cat $D/inference-b$b.txt
done
$B/cifarnet export $R/e35-default/best.pt --onnx --torchscript --data-dir /tmp/cifar --out /tmp/s10/exp/ > $D/export-e35.txt 2>&1
cat $D/export-e35.txt
s=$(date +%s.%N)
$B/cifarnet predict /tmp/m/photos --model $R/e35-default/best.pt --out /tmp/s10/pred.csv > $D/predict-1000.txt 2>&1
rc=$?
e=$(date +%s.%N)
echo "exit $rc, wall $(echo "$e - $s" | bc) s" >> $D/predict-1000.txt
tail -4 $D/predict-1000.txt
$B/python scripts/evaluate_variants.py $R/e10-default/best.pt --data-dir /tmp/cifar --rounds 3 > $D/evaluate_variants.txt 2>&1
cat $D/evaluate_variants.txt
$B/python scripts/profile_evaluate.py $R/e10-default/best.pt --data-dir /tmp/cifar > $D/profile-evaluate.txt 2>&1
tail -3 $D/profile-evaluate.txt
