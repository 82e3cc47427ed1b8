"""Where `cifarnet evaluate`'s time goes on a CPU: oneDNN's own per-primitive timings against the
evaluate loop's wall time, to show how close the loop is to its convolutions' ceiling.

Runs `cifarnet evaluate CKPT` in a subprocess with ONEDNN_VERBOSE=profile_exec (oneDNN then
prints one line per executed primitive with its time in ms), sums those times by primitive,
implementation and shape, and compares them with the loop's seconds from the summary CSV.
Verbose logging itself costs a little, so the loop's seconds here run slightly above a plain
`evaluate`; the convolution sum is the part no framework overhead can shave off.

    python scripts/profile_evaluate.py runs/train/best.pt --data-dir DATA [--peak-gmacs 229]
        [-- --batch-size 500]

Prints a table of the slowest primitives (with each convolution's multiply-accumulates per
second, counting only the kernel taps inside the image: oneDNN skips those over the padding),
then one JSON line: the loop's seconds and images/s, the summed convolution seconds (with the
ReLUs and additions fused into them), the images/s they alone would allow and their GMAC/s, and
what the rest of the loop (pooling, the input's conversion, and any element-wise operation left
unfused) costs. The sums also hold the few calls made while the model loads (the fused
graph's check on a 2-image batch: about 0.1% of the time). With --peak-gmacs (from
`scripts/dot_product_peak.py`), also the convolutions' and the whole loop's share of that
ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def _taps_inside(
    size_in: int, size_out: int, kernel: int, stride: int, dilation: int, pad: int
) -> int:
    """Kernel taps that land inside the input, summed over one spatial axis's output positions
    (oneDNN skips the taps that would read padding, so those are not work done)."""
    return sum(
        0 <= o * stride - pad + k * (dilation + 1) < size_in
        for o in range(size_out)
        for k in range(kernel)
    )


def convolution_macs(shape: str) -> int | None:
    """Multiply-accumulates of one call of a 2-D convolution, from oneDNN's shape string, e.g.
    mb1000_ic64oc64_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1 (None for one it cannot read)."""
    fields = dict(re.findall(r"([a-z]+)(\d+)", shape))
    try:
        per_axis = [
            _taps_inside(*(int(fields[f"{key}{axis}"]) for key in ("i", "o", "k", "s", "d", "p")))
            for axis in ("h", "w")
        ]
        groups = int(fields.get("g", 1))
        return (
            int(fields["mb"])
            * int(fields["ic"])
            // groups
            * int(fields["oc"])
            * per_axis[0]
            * per_axis[1]
        )
    except KeyError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=12, help="slowest primitives to list")
    parser.add_argument(
        "--peak-gmacs",
        type=float,
        help="this CPU's ceiling in the run's precision (scripts/dot_product_peak.py), to report "
        "the convolutions' and the whole loop's share of it",
    )
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
    conv_macs = 0
    print(f"{'ms':>9} {'calls':>6} {'GMAC/s':>7}  primitive / implementation / shape")
    for rank, ((kind, impl, shape), (calls, ms)) in enumerate(
        sorted(totals.items(), key=lambda kv: -kv[1][1])
    ):
        macs = convolution_macs(shape) if kind == "convolution" else None
        conv_macs += (macs or 0) * calls
        rate = f"{macs * calls / ms / 1e6:7.1f}" if macs else " " * 7
        if rank < args.rows:
            print(f"{ms:9.1f} {calls:6d} {rate}  {kind} / {impl} / {shape}")
    conv_gmacs = conv_macs / conv_s / 1e9
    summary = {
        "images": images,
        "loop_seconds": round(loop_s, 3),
        "loop_images_per_second": round(images / loop_s, 1),
        "convolution_seconds": round(conv_s, 3),
        "convolution_only_images_per_second": round(images / conv_s, 1),
        "convolution_macs_per_image": round(conv_macs / images),
        "convolution_gmacs": round(conv_gmacs, 1),
        "other_onednn_seconds": round(onednn_s - conv_s, 3),
        "outside_onednn_seconds": round(loop_s - onednn_s, 3),
        "top1": float(row["top1"]),
    }
    if args.peak_gmacs:
        summary["convolution_share_of_peak"] = round(conv_gmacs / args.peak_gmacs, 3)
        summary["loop_share_of_peak"] = round(conv_macs / loop_s / 1e9 / args.peak_gmacs, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
