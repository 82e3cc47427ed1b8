"""Training and inference images/s of every registered model on this machine: `cifarnet
benchmark --model NAME` for each (the same library call, `cifarnet.tasks.benchmarking.benchmark`,
in one process), short rows so that the whole zoo fits in a few minutes.

    python benchmarks/zoo_speed.py OUT [--batch-size 32] [--seconds 1] [--device cpu]
                                       [--models a,b,...] [--onnx]

Writes OUT/bench-<model>.csv (the benchmark's rows) and OUT/table.md (one row per model: its
parameters and multiply-accumulates per image, then images/s of each benchmark row, and the
1-minute load average before and after it was measured), and prints each table row as its
model finishes. Every benchmark row warms up for at least 2 batches and times at least 2.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cifarnet.models import list_models
from cifarnet.models.complexity import model_size
from cifarnet.tasks.benchmarking import benchmark

# table column: the benchmark row's (mode, runtime, precision)
COLUMNS = {
    "train fp32": ("train", "eager", "fp32"),
    "train bf16": ("train", "eager", "bf16"),
    "inference fp32": ("inference", "eager", "fp32"),
    "inference bf16": ("inference", "eager", "bf16"),
    "inference onnxruntime": ("inference", "onnxruntime", "fp32"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None, help="comma-separated; default: all")
    parser.add_argument("--onnx", action="store_true", help="add the ONNX Runtime row")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else list_models()
    args.out.mkdir(parents=True, exist_ok=True)
    columns = [c for c in COLUMNS if args.onnx or "onnx" not in c]
    header = ["model", "parameters", "MACs/image", *(f"{c} (images/s)" for c in columns)]
    lines = [
        f"batch size {args.batch_size}, device {args.device}, at least {args.seconds:g} s a row",
        "",
        "| " + " | ".join([*header, "load avg before / after", "seconds"]) + " |",
        "|" + "---|" * (len(header) + 2),
    ]
    print("\n".join(lines), flush=True)
    for name in models:
        before, t0 = os.getloadavg()[0], time.perf_counter()
        result = benchmark(
            model=name,
            device=args.device,
            batch_size=args.batch_size,
            seconds=args.seconds,
            onnx=args.onnx,
            out=args.out / f"bench-{name}.csv",
            force=True,
        )
        seconds, after = time.perf_counter() - t0, os.getloadavg()[0]
        parameters, macs = model_size(name, 100)
        cells = [f"`{name}`", f"{parameters / 1e6:.2f} M", f"{macs / 1e6:,.0f} M"]
        speeds = {(r.mode, r.runtime, r.precision): r.images_per_second for r in result.rows}
        cells += [f"{speeds[COLUMNS[c]]:,.1f}" if COLUMNS[c] in speeds else "-" for c in columns]
        cells += [f"{before:.2f} / {after:.2f}", f"{seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
