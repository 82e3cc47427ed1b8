#!/bin/bash
# The GPU check: measures cifarnet on a CUDA machine in a call or two of a few minutes, each
# step under its own timeout, writing what it measures under OUT as it goes (see
# benchmarks/README.md).
#
# usage: benchmarks/gpu_check.sh [options] OUT
#   --data DIR         a folder holding cifar-100-python/
#   --parts DIR        or: a folder of split_dataset.sh parts (part.1, part.2, ...), joined and
#                      unpacked into the work folder first (checked against parts.sha256 if there)
#   --reference FILE   the write-up's reference_train.py (its --batches mode is timed)
#   --steps LIST       comma-separated steps, run in the order given (default: all, this order):
#                      env,cudatests,refloop,reference,evaluate,speedrun,default70,bench,suite
#   --seeds LIST       the speedrun step's seeds, comma- or space-separated (default 0,1,2,3,4)
#   --deadline S       seconds this call may take (default 450: an 8-minute call)
#   --pack DIR         after every step, OUT packed into DIR/check.tgz and its summary.md copied
#                      to DIR: two files, whatever the step count, for a machine that returns few
#   --label TEXT       recorded in env.txt (e.g. the commit measured, where .git does not travel)
#   --work DIR         scratch folder for data and runs (default /tmp/cifarnet-gpu-check)
#   --dry-run          the same steps on the CPU with tiny settings (to catch mistakes first)
# Runs cifarnet from this source tree with the machine's own python3 (nothing is installed), or
# with the interpreter named by $PYTHON (e.g. PYTHON=.venv/bin/python for a dry run). A later
# call with the same OUT adds its steps to the same files (log.txt, steps.tsv, runs.txt).
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ALL_STEPS="env,cudatests,refloop,reference,evaluate,speedrun,default70,bench,suite"
DATA="" PARTS="" REFERENCE="" STEPS=$ALL_STEPS SEEDS="" DEADLINE=450 PACK="" LABEL=""
WORK=/tmp/cifarnet-gpu-check DRY=0 OUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --data) DATA=$2; shift 2 ;;
    --parts) PARTS=$2; shift 2 ;;
    --reference) REFERENCE=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --pack) PACK=$2; shift 2 ;;
    --label) LABEL=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1" >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "error: give the output folder (see --help)" >&2; exit 2; }
for name in ${STEPS//,/ }; do
  [[ ",$ALL_STEPS," == *",$name,"* ]] ||
    { echo "error: unknown step '$name' (steps: $ALL_STEPS)" >&2; exit 2; }
done
mkdir -p "$OUT" "$WORK" ${PACK:+"$PACK"}
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt STEPS_TSV=$OUT/steps.tsv RUNS=$OUT/runs.txt
T0=$(date +%s)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
CIF=("$PY" -m cifarnet)
[ -f "$STEPS_TSV" ] || printf 'step\trc\tseconds\n' > "$STEPS_TSV"

say() { echo "== +$(($(date +%s) - T0))s $*" | tee -a "$LOG"; }
left() { echo $((DEADLINE - ($(date +%s) - T0))); }

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

# train_run NAME CAP RUN ARGS...: step NAME, `cifarnet train ARGS` into a fresh run folder RUN
# of the work folder (a rerun replaces it); then the run's config, summary and metrics appended
# to runs.txt after a line naming the run alone (a rerun's copy replaces all of the earlier one's)
train_run() {
  local name=$1 cap=$2 run=$3 f
  shift 3
  rm -rf "${RUNSDIR:?}/$run"
  step "$name" "$cap" "${CIF[@]}" train "$@" "${COMMON[@]}" --name "$run"
  echo "### $run/" >> "$RUNS"
  for f in config.json summary.json metrics.csv; do
    [ -f "$RUNSDIR/$run/$f" ] && { echo "### $run/$f"; cat "$RUNSDIR/$run/$f"; echo; } >> "$RUNS"
  done
}

# summary.md rewritten (through a temporary file: a failing summary keeps the last one) and,
# with --pack, OUT packed into PACK/check.tgz the same way
summarise() {
  "$PY" "$ROOT/benchmarks/gpu_summary.py" "$OUT" > "$OUT/summary.md.tmp" 2>> "$LOG" &&
    mv "$OUT/summary.md.tmp" "$OUT/summary.md"
  rm -f "$OUT/summary.md.tmp"
  if [ -n "$PACK" ]; then
    tar czf "$PACK/check.tgz.tmp" -C "$(dirname "$OUT")" "$(basename "$OUT")" 2>> "$LOG" &&
      mv "$PACK/check.tgz.tmp" "$PACK/check.tgz"
    [ -f "$OUT/summary.md" ] && cp "$OUT/summary.md" "$PACK/summary.md"
  fi
}

# one line, before any step, when the interpreter cannot run cifarnet (or, for the real check,
# sees no GPU): otherwise every step would fail the same way, each after its own start-up
if ! why=$("$PY" -c 'import torch, torchvision, typer, rich, pandas' 2>&1); then
  say "'$PY' cannot import torch, torchvision, typer, rich and pandas (set PYTHON): \
$(tail -1 <<< "$why")"
  exit 1
fi
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "torch in '$PY' sees no CUDA device (--dry-run runs the steps on the CPU)"
  exit 1
fi

if [ "$DRY" = 1 ]; then
  # a slow shared CPU: each step's timeout 4 times longer
  DEV=cpu TINY=(--subset 256 --val-size 50) EP70=2 EPREF=2 NB=3 WORKERS=0 CAPX=4
  SEEDS=${SEEDS:-0 1} BENCH=(--seconds 0.1 --batch-size 16) COMPILE=(--no-compile)
  # the speedrun recipe's residual FastNet at a sixteenth of its width, so that its 6-view
  # evaluation of the 10,000 test images fits the step on a CPU; compiled, as on CUDA, so that
  # the compiled training path runs here first, with batches of 128 so that the 206 training
  # images make one full batch (the only shape compiled, as in a real run)
  echo '{"model_kwargs": {"widths": [8, 32, 32], "convs_per_stage": 3}}' > "$WORK/narrow.json"
  SPEEDRUN=(--config "$WORK/narrow.json" --batch-size 128 --compile)
else
  # NB: the write-up's loop times from its first batch (worker start-up, CUDA warm-up
  # included); 300 batches of 256 (about 10 s at its 7,700 images/s on an H200) amortise that
  DEV=cuda TINY=() EP70=70 EPREF=2 NB=300 WORKERS=4 CAPX=1
  SEEDS=${SEEDS:-0 1 2 3 4} BENCH=(--seconds 1) COMPILE=() SPEEDRUN=()
fi
# the tests that exercise CUDA itself run first and apart; the rest of the suite last
CUDA_TESTS=(tests/test_cuda.py tests/test_gpu_path.py)
XDIST=()
"$PY" -c "import xdist" 2> /dev/null && XDIST=(-n 8)

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
COMMON=(--data-dir "$DATA" --device "$DEV" --runs-dir "$RUNSDIR" --quiet --no-download)

run_env() {
  {
    date -u
    [ -n "$LABEL" ] && echo "label: $LABEL"
    timeout 20 nvidia-smi || true
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', \
torchvision.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
    nproc
    (cd "$ROOT" && git log -1 --format='cifarnet %h %s' 2>/dev/null) || true
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt" >> "$LOG"
}

# pytest NAME CAP FILE ARGS...: pytest's whole output in FILE under OUT, its last lines in
# log.txt; -rfE names each failure in the short summary
run_pytest() {
  local name=$1 cap=$2 file=$3
  shift 3
  (cd "$ROOT" && step "$name" "$cap" bash -c "'$PY' -m pytest -o addopts='' -q -rfE \
    -p no:cacheprovider ${XDIST[*]} $* > '$OUT/$file' 2>&1; rc=\$?; tail -5 '$OUT/$file'; \
    exit \$rc")
}

run_cudatests() { run_pytest cudatests 120 cudatests.txt "${CUDA_TESTS[@]}"; }

# the rest of the suite (on a CPU-only machine the CUDA tests above are all skipped)
run_suite() {
  if [ "$DRY" = 1 ]; then
    say "SKIP suite (the dry run's machine runs the suite itself: make test)"
  else
    run_pytest suite 240 pytest.txt tests "${CUDA_TESTS[@]/#/--ignore=}"
  fi
}

run_bench() {
  local model
  for model in resnet_reference fastnet; do
    step "bench_$model" 60 "${CIF[@]}" benchmark --model "$model" --device "$DEV" --no-onnx \
      "${BENCH[@]}" --out "$OUT/bench_$model.csv" --force
  done
}

run_refloop() {
  if [ -z "$REFERENCE" ] || [ ! -f "$REFERENCE" ]; then
    say "SKIP refloop (no --reference file)"
    return
  fi
  # the write-up's loop prints one JSON line (train_img_per_s); pipefail keeps its exit code
  step refloop 90 bash -c "set -o pipefail; '$PY' '$REFERENCE' '$DATA' --batches $NB \
    --workers $WORKERS | tail -1 > '$OUT/refloop.json'"
}

run_reference() {
  # compiled on CUDA (the default): its compile_seconds are apart from the epochs' images/s
  train_run reference 150 reference --recipe reference --epochs "$EPREF" "${TINY[@]}"
}

run_evaluate() {
  local best=$RUNSDIR/reference/best.pt
  if [ ! -f "$best" ]; then
    say "SKIP evaluate (no reference run)"
    return
  fi
  # its CSVs and confusion plot go to the work folder: only the timing line is kept
  step evaluate 60 bash -c "'$PY' -m cifarnet evaluate '$best' --data-dir '$DATA' \
    --device $DEV --no-download --out '$WORK/evaluate.csv' --force > '$OUT/evaluate.txt' 2>&1"
}

run_speedrun() {
  local seed
  if ! "$PY" -c "from cifarnet.config.recipes import RECIPES; assert 'speedrun' in RECIPES" \
    2> /dev/null; then
    say "SKIP speedrun (this cifarnet has no --recipe speedrun)"
    return
  fi
  for seed in ${SEEDS//,/ }; do
    rm -f "$OUT/speedrun_tta_$seed.csv"  # a previous check's TTA line must not pass for this one's
    train_run "speedrun_$seed" 90 "speedrun-$seed" --recipe speedrun --seed "$seed" \
      "${TINY[@]}" "${SPEEDRUN[@]}"
    # the recipe's figure is with its 6-view test-time augmentation; of evaluate's files only
    # the summary line is kept (the per-class and confusion files stay in the work folder)
    if [ -f "$RUNSDIR/speedrun-$seed/best.pt" ]; then
      step "speedrun_tta_$seed" 30 "${CIF[@]}" evaluate "$RUNSDIR/speedrun-$seed/best.pt" \
        --tta-shift 1 --data-dir "$DATA" --device "$DEV" --no-download \
        --out "$WORK/speedrun_tta_$seed.csv" --force &&
        cp "$WORK/speedrun_tta_$seed.csv" "$OUT/"
    else
      say "SKIP speedrun_tta_$seed (no best.pt)"
    fi
    summarise
  done
}

run_default70() {
  # up to 4 minutes (the target is 3; a run cut short is projected from its epochs),
  # checkpoints every 10 epochs (and at the end)
  train_run default70 240 default70 --epochs "$EP70" --save-every 10 "${TINY[@]}" \
    "${COMPILE[@]}"
}

for name in ${STEPS//,/ }; do
  "run_$name"
  summarise
done

say "done"
cat "$OUT/summary.md" | tee -a "$LOG"
