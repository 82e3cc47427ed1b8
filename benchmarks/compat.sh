#!/bin/bash
# The compatibility check of one Python x torch x torchvision: a throwaway virtual environment
# with those versions, cifarnet[dev] installed into it, the test suite, and an export of every
# registered model to ONNX and TorchScript with the parity check (export_every_model.py).
#
# usage: benchmarks/compat.sh --torch VERSION --torchvision VERSION [options]
#   --python PATH       the interpreter the environment is made from (default: python3)
#   --out DIR           where the results go (default: compat-results/py<X.Y>-torch<V>-tv<V>)
#   --pytest "ARGS"     arguments for pytest (default: none, the whole default suite)
#   --wheels DIR        keep the downloaded wheels here and reuse them (default: a fresh folder
#                       in the work folder, deleted at the end: a cold download every time)
#   --download-only     stop after the download (with --wheels: fetch them for a later run)
#   --skip-if-offline   when the wheels cannot be downloaded, say so in one line and exit 0
#                       (for CI machines without the package registry)
#   --keep              keep the work folder (environment, source copy) for a look afterwards
# Steps, each timed: download (pip download of every wheel, the only step that needs the
# network), install (offline, from those wheels), tests, exports. The work folder is made under
# $TMPDIR (default /tmp). pip's own configuration (index, mirrors) applies.
# Writes to OUT: result.json (versions, outcome, minutes per step), pytest.txt, exports.txt,
# exports.json, freeze.txt, download.txt. Exit: 0 passed (or skipped offline), 1 tests or
# exports failed, 2 a usage or set-up error, 3 the wheels could not be downloaded.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TORCH="" TORCHVISION="" PY=python3 OUT="" PYTEST_ARGS="" WHEELS="" OFFLINE_OK=0 KEEP=0 ONLY_DL=0
while [ $# -gt 0 ]; do
  case $1 in
    --torch) TORCH=$2; shift 2 ;;
    --torchvision) TORCHVISION=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --pytest) PYTEST_ARGS=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --download-only) ONLY_DL=1; shift ;;
    --skip-if-offline) OFFLINE_OK=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$TORCH" ] && [ -n "$TORCHVISION" ] || {
  echo "error: give --torch and --torchvision versions (see --help)" >&2
  exit 2
}
PYVER=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])') || {
  echo "error: cannot run the interpreter $PY" >&2
  exit 2
}
PAIR=py${PYVER%.*}-torch$TORCH-tv$TORCHVISION
OUT=${OUT:-$ROOT/compat-results/$PAIR}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cifarnet-compat.XXXXXX")
[ "$KEEP" = 1 ] && echo "compat: work folder $WORK (kept)" || trap 'rm -rf "$WORK"' EXIT
WHEELS=${WHEELS:-$WORK/wheels}
mkdir -p "$WHEELS"
VENV=$WORK/venv SRC=$WORK/src
rm -f "$OUT"/{result.json,pytest.txt,pytest.xml,exports.txt,exports.json,freeze.txt,download.txt}

say() { echo "compat $PAIR: $*"; }
declare -A SECONDS_OF
timed() { # timed NAME CMD...: run CMD, its seconds in SECONDS_OF[NAME], its exit code returned
  local name=$1 t0=$SECONDS rc
  shift
  "$@"
  rc=$?
  SECONDS_OF[$name]=$((SECONDS - t0))
  return $rc
}

# a copy of this source tree (tracked and untracked-but-not-ignored files): the tests run from
# it, so nothing here is touched and the working tree's own .venv is never used
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$ROOT" ls-files -z -co --exclude-standard \
    | (cd "$ROOT" && xargs -0 -r tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$SRC"
else
  tar -cf - -C "$ROOT" --exclude=.venv --exclude=compat-results . | tar -xf - -C "$SRC"
fi
"$PY" -m venv "$VENV" || { echo "error: $PY -m venv failed" >&2; exit 2; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
SPECS=("torch==$TORCH" "torchvision==$TORCHVISION" "setuptools>=77" "$SRC[dev]")

COLD=false
[ -z "$(ls -A "$WHEELS")" ] && COLD=true
say "downloading the wheels (into an empty folder: $COLD)"
if ! timed download "${PIP[@]}" download --no-cache-dir --timeout 60 --retries 3 \
  --dest "$WHEELS" "${SPECS[@]}" >"$OUT/download.txt" 2>&1; then
  reason=$(grep -m1 -oE "Failed to establish a new connection: [^')]*|Temporary failure in name \
resolution|Name or service not known|Read timed out|No matching distribution found for [^ ]+" \
    "$OUT/download.txt")
  echo "compat $PAIR: skipped: the wheels could not be downloaded from the package registry" \
    "(${reason:-see $OUT/download.txt})"
  [ "$OFFLINE_OK" = 1 ] && exit 0 || exit 3
fi
say "downloaded in ${SECONDS_OF[download]} s ($(du -sh "$WHEELS" | cut -f1))"
[ "$ONLY_DL" = 1 ] && exit 0
say "installing (offline, from the downloaded wheels)"
if ! timed install "${PIP[@]}" install --no-cache-dir --no-index --find-links "$WHEELS" \
  "${SPECS[@]}" >"$OUT/install.txt" 2>&1; then
  tail -5 "$OUT/install.txt" >&2
  echo "error: the installation from the downloaded wheels failed (see $OUT/install.txt)" >&2
  exit 2
fi
rm -f "$OUT/install.txt"
"${PIP[@]}" freeze --exclude-editable | grep -v '^cifarnet' >"$OUT/freeze.txt"

cd "$SRC" || exit 2
say "running the test suite (pytest $PYTEST_ARGS)"
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments
timed tests "$VENV/bin/python" -m pytest $PYTEST_ARGS --junitxml="$OUT/pytest.xml" \
  >"$OUT/pytest.txt" 2>&1
TESTS_RC=$?
tail -1 "$OUT/pytest.txt"
grep -E '^(FAILED|ERROR) ' "$OUT/pytest.txt"

say "exporting every registered model"
timed exports "$VENV/bin/python" benchmarks/export_every_model.py --out "$OUT/exports.json" \
  >"$OUT/exports.txt" 2>&1
EXPORTS_RC=$?
grep -c ' FAILED' "$OUT/exports.txt" | xargs echo "models that failed to export:"

# this machine's paths out of the recorded text: the wheels, the work folder, $TMPDIR
sed -i -e "s#$WHEELS#\$WHEELS#g" -e "s#$WORK#\$WORK#g" -e "s#${TMPDIR:-/tmp}/#\$TMPDIR/#g" \
  "$OUT"/{pytest.txt,exports.txt,download.txt}

"$VENV/bin/python" - "$OUT" "$PAIR" "$TESTS_RC" "$EXPORTS_RC" "$COLD" "$PYTEST_ARGS" \
  "${SECONDS_OF[download]}" "${SECONDS_OF[install]}" "${SECONDS_OF[tests]}" \
  "${SECONDS_OF[exports]}" <<'EOF'
"""result.json: versions, the suite's counts, the exports' outcome, minutes per step."""
import json
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

out, pair, tests_rc, exports_rc, cold, args = sys.argv[1:7]
steps = dict(zip(("download", "install", "tests", "exports"), map(float, sys.argv[7:]), strict=True))
suite = {"passed": 0, "failed": 0, "skipped": 0, "exit_code": int(tests_rc), "args": args}
xml = Path(out, "pytest.xml")
if xml.exists():
    node = ET.parse(xml).getroot()
    node = node if node.tag == "testsuite" else node.find("testsuite")
    failed = int(node.get("failures", 0)) + int(node.get("errors", 0))
    skipped = int(node.get("skipped", 0))
    suite.update(failed=failed, skipped=skipped, passed=int(node.get("tests", 0)) - failed - skipped)
    suite["failures"] = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in node.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    xml.unlink()
exports_file = Path(out, "exports.json")
exports = json.loads(exports_file.read_text()) if exports_file.exists() else {"models": []}
packages = ["torch", "torchvision", "numpy", "pandas", "onnx", "onnxruntime", "onnxscript"]
packages += ["pyarrow", "matplotlib", "pillow", "rich", "typer"]
minutes = {step: round(seconds / 60, 1) for step, seconds in steps.items()}
minutes["total"] = round(sum(steps.values()) / 60, 1)
result = {
    "pair": pair,
    "python": sys.version.split()[0],
    "versions": {p: version(p) for p in packages},
    "tests": suite,
    "exports": {
        "exit_code": int(exports_rc),
        "models": len(exports["models"]),
        "failed": exports.get("failed", []),
        "exporter": {r["model"]: r["onnx"].get("exporter", "failed") for r in exports["models"]},
    },
    "minutes": minutes,
    "download_into_an_empty_folder": cold == "true",
}
Path(out, "result.json").write_text(json.dumps(result, indent=1) + "\n")
print(f"compat {pair}: tests {suite['passed']} passed, {suite['failed']} failed, "
      f"{suite['skipped']} skipped; exports {len(exports['models'])} models, "
      f"{len(exports.get('failed', []))} failed; minutes {minutes}")
EOF
[ "$TESTS_RC" = 0 ] && [ "$EXPORTS_RC" = 0 ] && exit 0
exit 1
