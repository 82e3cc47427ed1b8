"""Side-by-side throughput: the write-up's loop vs cifarnet, on the same machine, alternating.

Training (the default): the reference loop is timed over `--batches` steps of 256 images (its
own --batches mode); `cifarnet train --recipe reference` (the same network and
hyper-parameters) over `--epochs` epochs of a `--subset`, taking the steady-state images/s of
the last epoch from metrics.csv.

Evaluation (`--evaluate CKPT`): the reference's evaluation loop over the 10,000 test images
(`reference_train.py DATA --seconds 1`: one second of training, then its eval loop, which
reports eval_img_per_s) against `cifarnet evaluate CKPT` over the same images (images/s of
its timed loop, from the summary CSV).

Each of `--rounds` rounds runs the reference, then cifarnet, so slow spells of a shared
machine hit both sides alike; the result is the per-round ratios and their median.

    python benchmarks/compare_reference.py --data-dir DATA --reference REFERENCE [--rounds 3]
    python benchmarks/compare_reference.py --data-dir DATA --reference REFERENCE \
        --evaluate runs/train/best.pt

DATA must hold the extracted cifar-100-python/ folder (the reference script reads it directly);
REFERENCE is the write-up's training script, reference_train.py.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def run(cmd: list[str]) -> str:
    """Run a command to completion; its stdout."""
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def run_reference(script: Path, data_dir: Path, flags: list[str]) -> dict:
    out = run([sys.executable, str(script), str(data_dir), *flags])
    return json.loads(out.strip().splitlines()[-1])


def cifarnet_train_throughput(data_dir: Path, subset: int, epochs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [
            sys.executable, "-m", "cifarnet", "train", "--recipe", "reference",
            "--data-dir", str(data_dir), "--subset", str(subset), "--epochs", str(epochs),
            "--val-size", "1000", "--runs-dir", runs, "--quiet", *extra,
        ]  # fmt: skip
        run(cmd)
        metrics = pd.read_csv(Path(runs) / "train" / "metrics.csv")
        config = json.loads((Path(runs) / "train" / "config.json").read_text())
    return {
        "images_per_second": round(float(metrics["images_per_second"].iloc[-1]), 1),
        "images_per_second_by_epoch": [round(v, 1) for v in metrics["images_per_second"]],
        "precision": config["_meta"]["precision"],
        "channels_last": config["_meta"]["channels_last"],
    }


def cifarnet_evaluate_throughput(checkpoint: Path, data_dir: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "eval.csv"
        cmd = [
            sys.executable, "-m", "cifarnet", "evaluate", str(checkpoint),
            "--data-dir", str(data_dir), "--out", str(out), *extra,
        ]  # fmt: skip
        run(cmd)
        row = pd.read_csv(out).iloc[0]
    return {
        "images_per_second": round(float(row["images_per_second"]), 1),
        "images": int(row["images"]),
        "top1": float(row["top1"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="reference_train.py")
    parser.add_argument("--evaluate", type=Path, metavar="CKPT", help="compare evaluation")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--subset", type=int, default=5120)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more cifarnet train/evaluate flags, after --")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.evaluate is None:
        task, ref_flags, ref_key = "train", ["--batches", str(args.batches)], "train_img_per_s"

        def ours() -> dict:
            return cifarnet_train_throughput(args.data_dir, args.subset, args.epochs, args.extra)
    else:
        task, ref_flags, ref_key = "evaluate", ["--seconds", "1"], "eval_img_per_s"

        def ours() -> dict:
            return cifarnet_evaluate_throughput(args.evaluate, args.data_dir, args.extra)

    rounds = []
    for _ in range(args.rounds):
        ref = run_reference(args.reference, args.data_dir, ref_flags)
        mine = ours()
        ratio = round(mine["images_per_second"] / ref[ref_key], 2)
        rounds.append({"reference": ref, "cifarnet": mine, "speedup": ratio})
    median = statistics.median(r["speedup"] for r in rounds)
    print(json.dumps({"task": task, "rounds": rounds, "median_speedup": median}))


if __name__ == "__main__":
    main()
