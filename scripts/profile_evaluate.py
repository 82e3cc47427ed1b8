"""Where `cifarnet evaluate`'s time goes on a CPU: oneDNN's own per-primitive timings against the
evaluate loop's wall time, to show how close the loop is to its convolutions' ceiling.

Runs `cifarnet evaluate CKPT` in a subprocess with ONEDNN_VERBOSE=profile_exec (oneDNN then
prints one line per executed primitive with its time in ms), sums those times by primitive,
implementation and shape, and compares them with the loop's seconds from the summary CSV.
Verbose logging itself costs a little, so the loop's seconds here run slightly above a plain
`evaluate`; the convolution sum is the part no framework overhead can shave off.

    python scripts/profile_evaluate.py runs/train/best.pt --data-dir DATA [-- --batch-size 500]

Prints a table of the slowest primitives, then one JSON line: the loop's seconds and images/s,
the summed convolution seconds (with the ReLUs and additions fused into them) and the images/s
they alone would allow, and what the rest of the loop (pooling, the input's conversion, and any
element-wise operation left unfused) costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd


def primitive_times(log: str) -> dict[tuple[str, str, str], list[float]]:
    """(primitive, implementation, shape) -> [calls, total ms] from ONEDNN_VERBOSE=profile_exec
    lines: onednn_verbose,[timestamp,]primitive,exec,cpu,KIND,IMPL,...,SHAPE,MS."""
    totals: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for line in log.splitlines():
        fields = line.strip().split(",")
        if not fields[0].endswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        try:
            ms = float(fields[-1])
        except ValueError:
            continue
        key = (fields[at + 2], fields[at + 3], fields[-2])
        totals[key][0] += 1
        totals[key][1] += ms
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=12, help="slowest primitives to list")
    # more `cifarnet evaluate` flags, after `--`: read as unknown arguments, since argparse
    # cannot take a trailing positional list after the checkpoint and an option
    args, extra = parser.parse_known_args()
    extra = extra[1:] if extra[:1] == ["--"] else extra
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "eval.csv"
        cmd = [
            sys.executable, "-m", "cifarnet", "evaluate", str(args.checkpoint),
            "--data-dir", str(args.data_dir), "--out", str(out), *extra,
        ]  # fmt: skip
        env = {**os.environ, "ONEDNN_VERBOSE": "profile_exec"}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = pd.read_csv(out).iloc[0]
    totals = primitive_times(done.stdout)
    if not totals:
        sys.exit("no oneDNN primitive ran (not a CPU checkpoint run, or oneDNN is not in use)")
    images, loop_s = int(row["images"]), float(row["seconds"])
    conv_s = sum(ms for (kind, _, _), (_, ms) in totals.items() if kind == "convolution") / 1000
    onednn_s = sum(ms for _, ms in totals.values()) / 1000
    print(f"{'ms':>9} {'calls':>6}  primitive / implementation / shape")
    for (kind, impl, shape), (calls, ms) in sorted(totals.items(), key=lambda kv: -kv[1][1])[
        : args.rows
    ]:
        print(f"{ms:9.1f} {calls:6d}  {kind} / {impl} / {shape}")
    print(
        json.dumps(
            {
                "images": images,
                "loop_seconds": round(loop_s, 3),
                "loop_images_per_second": round(images / loop_s, 1),
                "convolution_seconds": round(conv_s, 3),
                "convolution_only_images_per_second": round(images / conv_s, 1),
                "other_onednn_seconds": round(onednn_s - conv_s, 3),
                "outside_onednn_seconds": round(loop_s - onednn_s, 3),
                "top1": float(row["top1"]),
            }
        )
    )


if __name__ == "__main__":
    main()
