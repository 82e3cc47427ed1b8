#!/bin/bash
# The GPU check: measures cifarnet on a CUDA machine in one call of a few minutes, each step
# under its own timeout, writing what it measures under OUT as it goes (see benchmarks/README.md).
#
# usage: benchmarks/gpu_check.sh [options] OUT
#   --data DIR         a folder holding cifar-100-python/
#   --parts DIR        or: a folder of split_dataset.sh parts (part.1, part.2, ...), joined and
#                      unpacked into the work folder first (checked against parts.sha256 if there)
#   --reference FILE   the write-up's reference_train.py (its --batches mode is timed)
#   --steps LIST       comma-separated steps to run, in this order (default: all):
#                      env,pytest,bench,refloop,reference,evaluate,speedrun,default70
#   --speedrun         also run `train --recipe speedrun` over 5 seeds (if the recipe exists),
#                      each evaluated with `--tta-shift 1`
#   --deadline S       seconds the whole check may take (default 450: an 8-minute call)
#   --work DIR         scratch folder for data and runs (default /tmp/cifarnet-gpu-check)
#   --dry-run          the same steps on the CPU with tiny settings (to catch mistakes first)
# Runs cifarnet from this source tree with the machine's own python3 (nothing is installed), or
# with the interpreter named by $PYTHON (e.g. PYTHON=.venv/bin/python for a dry run).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA="" PARTS="" REFERENCE="" STEPS="env,pytest,bench,refloop,reference,evaluate,speedrun,default70"
SPEEDRUN=0 DEADLINE=450 WORK=/tmp/cifarnet-gpu-check DRY=0 OUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --reference) REFERENCE=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --speedrun) SPEEDRUN=1; shift ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "error: give the output folder (see --help)" >&2; exit 2; }
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt STEPS_TSV=$OUT/steps.tsv RUNS=$OUT/runs.txt
T0=$(date +%s)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
CIF=("$PY" -m cifarnet)
[ -f "$STEPS_TSV" ] || printf 'step\trc\tseconds\n' > "$STEPS_TSV"

say() { echo "== +$(($(date +%s) - T0))s $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - ($(date +%s) - T0))); }
wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

# step NAME CAP CMD...: run CMD under `timeout` (CAP seconds, or less when the deadline is
# near), its output appended to log.txt, its rc and seconds to steps.tsv
step() {
  local name=$1 cap=$2 limit s rc
  shift 2
  cap=$((cap * CAPX))
  limit=$(($(left) - 10))
  [ "$limit" -lt "$cap" ] && cap=$limit
  if [ "$cap" -lt 5 ]; then
    say "SKIP $name (no time left)"
    printf '%s\tskipped\t0\n' "$name" >> "$STEPS_TSV"
    return 124
  fi
  say "START $name (timeout ${cap}s): $*"
  s=$(date +%s.%N)
  timeout -k 5 "$cap" "$@" >> "$LOG" 2>&1
  rc=$?
  local took
  took=$("$PY" -c "import time; print(round(time.time() - $s, 1))")
  say "END $name rc=$rc ${took}s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$took" >> "$STEPS_TSV"
  return $rc
}

# keep RUN_FOLDER: its config, summary and metrics appended to runs.txt
keep() {
  local f
  for f in config.json summary.json metrics.csv; do
    [ -f "$1/$f" ] && { echo "### $(basename "$1")/$f"; cat "$1/$f"; echo; } >> "$RUNS"
  done
}

summarise() { "$PY" "$ROOT/benchmarks/gpu_summary.py" "$OUT" > "$OUT/summary.md" 2>> "$LOG"; }

# one line, before any step, when the interpreter cannot run cifarnet (or, for the real check,
# sees no GPU): otherwise every step would fail the same way, each after its own start-up
"$PY" -c 'import torch, torchvision, typer, rich, pandas' 2>> "$LOG" ||
  { say "'$PY' cannot import torch, torchvision, typer, rich and pandas (set PYTHON)"; exit 1; }
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "torch in '$PY' sees no CUDA device (--dry-run runs the steps on the CPU)"
  exit 1
fi

if [ "$DRY" = 1 ]; then
  # a slow shared CPU: each step's timeout 4 times longer
  DEV=cpu TINY=(--subset 256 --val-size 50) EP70=2 EPREF=2 NB=3 WORKERS=0 SEEDS="0 1" CAPX=4
  BENCH=(--seconds 0.1 --batch-size 16) COMPILE=(--no-compile) PYTEST=(tests/test_cuda.py)
  # the speedrun recipe's residual FastNet at a sixteenth of its width, so that its 6-view
  # evaluation of the 10,000 test images fits the step on a CPU
  echo '{"model_kwargs": {"widths": [8, 32, 32], "convs_per_stage": 3}}' > "$WORK/narrow.json"
  NARROW=(--config "$WORK/narrow.json")
else
  DEV=cuda TINY=() EP70=70 EPREF=2 NB=100 WORKERS=4 SEEDS="0 1 2 3 4" CAPX=1
  BENCH=(--seconds 2) COMPILE=() PYTEST=(tests) NARROW=()
fi

# the data: a folder, or parts joined and unpacked
if [ -n "$PARTS" ]; then
  say "joining $PARTS/part.* into $WORK/data"
  cat "$PARTS"/part.* > "$WORK/cifar.tgz" || { say "cannot join the parts"; exit 1; }
  if [ -f "$PARTS/parts.sha256" ]; then
    [ "$(sha256sum "$WORK/cifar.tgz" | cut -d' ' -f1)" = "$(cat "$PARTS/parts.sha256")" ] ||
      { say "the joined archive does not match parts.sha256"; exit 1; }
  fi
  mkdir -p "$WORK/data" && tar xzf "$WORK/cifar.tgz" -C "$WORK/data" && rm "$WORK/cifar.tgz"
  DATA=$WORK/data
fi
[ -d "$DATA/cifar-100-python" ] || { say "no cifar-100-python/ in '$DATA' (--data or --parts)"; exit 1; }
RUNSDIR=$WORK/runs
rm -rf "$RUNSDIR"
COMMON=(--data-dir "$DATA" --device "$DEV" --runs-dir "$RUNSDIR" --quiet --no-download)

if wanted env; then
  {
    date -u
    nvidia-smi || true
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
    nproc
    (cd "$ROOT" && git log -1 --format='cifarnet %h %s' 2>/dev/null) || true
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt" >> "$LOG"
fi

if wanted pytest; then
  XDIST=()
  "$PY" -c "import xdist" 2> /dev/null && XDIST=(-n 8)
  # pytest's whole output in pytest.txt, its last lines in log.txt
  (cd "$ROOT" && step pytest 150 bash -c "'$PY' -m pytest -o addopts='' -q -p no:cacheprovider \
    ${XDIST[*]} ${PYTEST[*]} > '$OUT/pytest.txt' 2>&1; rc=\$?; tail -5 '$OUT/pytest.txt'; exit \$rc")
  summarise
fi

if wanted bench; then
  for model in resnet_reference fastnet; do
    step "bench_$model" 60 "${CIF[@]}" benchmark --model "$model" --device "$DEV" --no-onnx \
      "${BENCH[@]}" --out "$OUT/bench_$model.csv" --force
  done
  summarise
fi

if wanted refloop; then
  if [ -z "$REFERENCE" ] || [ ! -f "$REFERENCE" ]; then
    say "SKIP refloop (no --reference file)"
  else
    # the write-up's loop prints one JSON line (train_img_per_s)
    step refloop 90 bash -c "'$PY' '$REFERENCE' '$DATA' --batches $NB --workers $WORKERS \
      | tail -1 > '$OUT/refloop.json'"
  fi
  summarise
fi

if wanted reference; then
  # compiled on CUDA (the default): its compile_seconds are apart from the epochs' images/s
  step reference 150 "${CIF[@]}" train --recipe reference --epochs "$EPREF" "${TINY[@]}" \
    "${COMMON[@]}" --name reference
  keep "$RUNSDIR/reference"
  summarise
fi

if wanted evaluate; then
  best=$RUNSDIR/reference/best.pt
  if [ -f "$best" ]; then
    step evaluate 60 bash -c "'$PY' -m cifarnet evaluate '$best' --data-dir '$DATA' \
      --device $DEV --out '$OUT/evaluate.csv' --force > '$OUT/evaluate.txt' 2>&1"
  else
    say "SKIP evaluate (no reference run)"
  fi
  summarise
fi

if wanted speedrun && [ "$SPEEDRUN" = 1 ]; then
  if "$PY" -c "from cifarnet.config.recipes import RECIPES; assert 'speedrun' in RECIPES" \
    2> /dev/null; then
    for seed in $SEEDS; do
      rm -f "$OUT/speedrun_tta_$seed.csv"  # a previous check's must not pass for this run's
      step "speedrun_$seed" 90 "${CIF[@]}" train --recipe speedrun --seed "$seed" \
        "${TINY[@]}" "${NARROW[@]}" "${COMMON[@]}" "${COMPILE[@]}" --name "speedrun-$seed"
      keep "$RUNSDIR/speedrun-$seed"
      # the recipe's figure is with its 6-view test-time augmentation
      if [ -f "$RUNSDIR/speedrun-$seed/best.pt" ]; then
        step "speedrun_tta_$seed" 30 "${CIF[@]}" evaluate "$RUNSDIR/speedrun-$seed/best.pt" \
          --tta-shift 1 --data-dir "$DATA" --device "$DEV" --no-download \
          --out "$OUT/speedrun_tta_$seed.csv" --force
      else
        say "SKIP speedrun_tta_$seed (no best.pt)"
      fi
    done
  else
    say "SKIP speedrun (this cifarnet has no --recipe speedrun)"
  fi
  summarise
fi

if wanted default70; then
  # all the time left; checkpoints every 10 epochs (and at the end)
  step default70 600 "${CIF[@]}" train --epochs "$EP70" --save-every 10 "${TINY[@]}" \
    "${COMMON[@]}" "${COMPILE[@]}" --name default70
  keep "$RUNSDIR/default70"
  summarise
fi

say "done"
cat "$OUT/summary.md" | tee -a "$LOG"
