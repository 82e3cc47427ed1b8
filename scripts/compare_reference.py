"""Side-by-side training throughput: the write-up's loop vs `cifarnet train --recipe reference`.

Both train the same network with the same hyper-parameters on the same machine, one after the
other. The reference loop is timed over `--batches` steps of 256 images (its own --batches
mode); cifarnet over `--epochs` epochs of a `--subset`, taking the steady-state images/s of the
last epoch from metrics.csv.

    python scripts/compare_reference.py --data-dir DATA \
        --reference ../shared/reference/reference_train.py

DATA must hold the extracted cifar-100-python/ folder (the reference script reads it directly).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd


def reference_throughput(script: Path, data_dir: Path, batches: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(script), str(data_dir), "--batches", str(batches)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def cifarnet_throughput(data_dir: Path, subset: int, epochs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as runs:
        cmd = [
            sys.executable, "-m", "cifarnet", "train", "--recipe", "reference",
            "--data-dir", str(data_dir), "--subset", str(subset), "--epochs", str(epochs),
            "--val-size", "1000", "--runs-dir", runs, "--quiet", *extra,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        metrics = pd.read_csv(Path(runs) / "train" / "metrics.csv")
        config = json.loads((Path(runs) / "train" / "config.json").read_text())
    return {
        "images_per_second_last_epoch": round(float(metrics["images_per_second"].iloc[-1]), 1),
        "images_per_second_by_epoch": [round(v, 1) for v in metrics["images_per_second"]],
        "precision": config["_meta"]["precision"],
        "channels_last": config["_meta"]["channels_last"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="reference_train.py")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--subset", type=int, default=5120)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more cifarnet train flags, after --")
    args = parser.parse_args()
    ref = reference_throughput(args.reference, args.data_dir, args.batches)
    ours = cifarnet_throughput(args.data_dir, args.subset, args.epochs, args.extra)
    ratio = ours["images_per_second_last_epoch"] / ref["train_img_per_s"]
    print(json.dumps({"reference": ref, "cifarnet": ours, "speedup": round(ratio, 2)}))


if __name__ == "__main__":
    main()
