"""The GPU check's results in brief (markdown), from the files gpu_check.sh wrote in its output
folder; works on a partial folder (a check stopped by its deadline).

usage: python benchmarks/gpu_summary.py OUT > OUT/summary.md
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

TARGETS = {"speedup": 10.0, "speedrun_top1": 75.0, "speedrun_seconds": 5.0, "default70_s": 180.0}


def runs(out: Path) -> dict[str, dict[str, str]]:
    """runs.txt as {run name: {file name: text}}. A header naming a run alone ("### name/")
    starts a new copy of it: a rerun's files replace all of the earlier run's, so that a rerun
    stopped before its summary.json does not show the earlier run's."""
    found: dict[str, dict[str, str]] = {}
    path = out / "runs.txt"
    if not path.exists():
        return found
    for part in path.read_text().split("### ")[1:]:
        header, _, body = part.partition("\n")
        name, _, file = header.strip().partition("/")
        if not file:
            found[name] = {}
            continue
        found.setdefault(name, {})[file] = body.strip()
    return found


def metrics(run: dict[str, str]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(run.get("metrics.csv", ""))))


def summary(run: dict[str, str]) -> dict:
    text = run.get("summary.json")
    return json.loads(text) if text else {}


def steps(out: Path) -> dict[str, tuple[str, float]]:
    path = out / "steps.tsv"
    if not path.exists():
        return {}
    rows = csv.DictReader(path.open(), delimiter="\t")
    return {r["step"]: (r["rc"], float(r["seconds"])) for r in rows}


def pytest_lines(out: Path, file: str) -> list[str]:
    """pytest's last line (its counts), and the failures' names, from its output `file`."""
    path = out / file
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return [f"- {line}" for line in [*failed, *lines[-1:]]]


def bench_lines(out: Path) -> list[str]:
    lines = []
    for path in sorted(out.glob("bench_*.csv")):
        for r in csv.DictReader(path.open()):
            lines.append(
                f"- {path.stem[6:]} {r['mode']} {r['runtime']} {r['precision']} batch "
                f"{r['batch_size']}: {float(r['images_per_second']):,.0f} images/s"
            )
    return lines


def reference_lines(out: Path, found: dict) -> list[str]:
    lines = []
    loop = None
    if (out / "refloop.json").exists():
        try:
            loop = json.loads((out / "refloop.json").read_text())["train_img_per_s"]
            lines.append(f"- the write-up's loop: {loop:,.0f} train images/s")
        except (ValueError, KeyError):
            lines.append("- the write-up's loop: no result (see log.txt)")
    rows = metrics(found.get("reference", {}))
    if rows:
        ours = float(rows[-1]["images_per_second"])  # the last epoch: steady state
        lines.append(
            f"- `train --recipe reference`, epoch {rows[-1]['epoch']}: {ours:,.0f} images/s"
        )
        if loop:
            ratio = ours / loop
            ok = "meets" if ratio >= TARGETS["speedup"] else "misses"
            lines.append(f"- speed-up {ratio:.2f}x ({ok} the {TARGETS['speedup']:g}x target)")
    return lines


def evaluate_lines(out: Path) -> list[str]:
    path = out / "evaluate.txt"
    if not path.exists():
        return []
    match = re.search(r"\(([\d,]+) images/s\)", path.read_text())
    return [f"- `cifarnet evaluate`: {match.group(1) if match else '?'} images/s"]


def speedrun_lines(out: Path, found: dict) -> list[str]:
    """Each seed's single-view and 6-view TTA test top-1 (evaluate's speedrun_tta_SEED.csv),
    and the mean of each kind over the seeds that have it."""
    lines, single, tta, seconds = [], [], [], []
    for name, run in sorted(found.items()):
        s = summary(run)
        if not name.startswith("speedrun") or not s:
            continue
        seed = name.rsplit("-", 1)[-1]
        tta_csv = out / f"speedrun_tta_{seed}.csv"
        views = float(next(csv.DictReader(tta_csv.open()))["top1"]) if tta_csv.exists() else None
        single.append(s["test_top1"])
        seconds.append(s["train_seconds"])
        shown = ""
        if views is not None:
            tta.append(views)
            shown = f", {views:.2f}% with 6-view TTA"
        lines.append(
            f"- seed {seed}: {s['test_top1']:.2f}% single view{shown}, "
            f"{s['train_seconds']:.2f} s training (+ {s.get('compile_seconds', 0):.1f} s compiling)"
        )
    if single:
        means = f"- mean {sum(single) / len(single):.2f}% single view ({len(single)} seeds)"
        if tta:
            means += f", {sum(tta) / len(tta):.2f}% with 6-view TTA ({len(tta)} seeds)"
        lines.append(
            f"{means}; slowest {max(seconds):.2f} s (targets >= "
            f"{TARGETS['speedrun_top1']:g}%, <= {TARGETS['speedrun_seconds']:g} s)"
        )
    return lines


def default70_lines(found: dict, done: dict[str, tuple[str, float]]) -> list[str]:
    run = found.get("default70", {})
    rows, s = metrics(run), summary(run)
    if not rows:
        return []
    wall = done.get("default70", ("?", float("nan")))[1]
    if s:
        return [
            f"- {s['epochs']} epochs: test top-1 {s['test_top1']:.2f}% (the CPU run: 72.57%); "
            f"{s['train_seconds']:.0f} s training + {s.get('compile_seconds', 0):.0f} s compiling, "
            f"{wall:.0f} s wall (target <= {TARGETS['default70_s']:g} s)"
        ]
    later = [float(r["epoch_seconds"]) for r in rows[1:]] or [float(rows[0]["epoch_seconds"])]
    per_epoch = sum(later) / len(later)
    config = json.loads(run.get("config.json", "{}") or "{}")
    epochs = config.get("epochs", 70)
    return [
        f"- stopped after {len(rows)} epochs ({wall:.0f} s wall), val top-1 "
        f"{float(rows[-1]['val_top1']):.2f}%; {per_epoch:.2f} s an epoch: {epochs} epochs "
        f"would take about {per_epoch * epochs:.0f} s of training"
    ]


def main(out: Path) -> str:
    found, done = runs(out), steps(out)
    sections = [
        ("Steps", [f"- {k}: rc {rc}, {sec:.1f} s" for k, (rc, sec) in done.items()]),
        ("CUDA tests", pytest_lines(out, "cudatests.txt")),
        ("Test suite", pytest_lines(out, "pytest.txt")),
        ("benchmark", bench_lines(out)),
        ("Against the write-up's loop", reference_lines(out, found)),
        ("evaluate", evaluate_lines(out)),
        ("Speedrun recipe", speedrun_lines(out, found)),
        ("Default recipe, 70 epochs", default70_lines(found, done)),
    ]
    text = ["# GPU check"]
    for title, lines in sections:
        if lines:
            text += ["", f"## {title}", *lines]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.stdout.write(main(Path(sys.argv[1])))
