"""A run's learning curve beside the write-up's own 70-epoch log, epoch by epoch.

The write-up's log (its training output, given as --post) holds one line per epoch:
    Iteration: 12 | Loss: 1.746 | Training accuracy: 55.38% | Test accuracy: 48.44%
This script reads those lines and a run's metrics.csv and prints, for every epoch both have,
the write-up's training loss and test top-1 next to the run's training loss and validation
top-1 (cifarnet holds out a validation split and touches the test set once, at the end; the
write-up trained on all 50,000 images and tested after every epoch, so the columns compare
like for like only approximately). A run with a validation split sees fewer images per epoch
(45,000 by default), so the table also gives the write-up's test top-1 at the same number of
training images seen (interpolated between its epochs). With --plot it draws both curves.

    python benchmarks/compare_writeup_curve.py runs/e70-reference --post WRITEUP_LOG \
        [--plot curve.png]

Prints the table, then one JSON line: epochs compared; mean and largest |difference| of top-1
in points by epoch, and the mean by images seen; at the last epoch compared, the write-up's
test top-1 by epoch and by images seen, and the run's validation top-1. (The training losses
compare like for like only for the reference recipe: the others add label smoothing.)
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

LINE = re.compile(
    r"Iteration:\s*(\d+)\s*\|\s*Loss:\s*([\d.]+)\s*\|\s*Training accuracy:\s*([\d.]+)%"
    r"\s*\|\s*Test accuracy:\s*([\d.]+)%"
)


def writeup_log(post: Path) -> pd.DataFrame:
    """epoch, loss, train_top1, test_top1 (percent) from the write-up's per-epoch lines."""
    rows = [
        {
            "epoch": int(m.group(1)),
            "loss": float(m.group(2)),
            "train_top1": float(m.group(3)),
            "test_top1": float(m.group(4)),
        }
        for m in LINE.finditer(post.read_text(encoding="utf-8", errors="replace"))
    ]
    if not rows:
        raise SystemExit(f"{post}: no 'Iteration: N | Loss: ... | Test accuracy: ...%' lines")
    return pd.DataFrame(rows).drop_duplicates("epoch", keep="last")


WRITEUP_IMAGES = 50_000  # per epoch: the write-up trained on the whole training set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (with metrics.csv)")
    parser.add_argument(
        "--post", type=Path, required=True, help="the write-up's log (one line per epoch)"
    )
    parser.add_argument("--plot", type=Path, help="write both curves to this PNG")
    args = parser.parse_args()
    run = pd.read_csv(args.run / "metrics.csv")
    both = writeup_log(args.post).merge(run, on="epoch", suffixes=("_writeup", "_run"))
    if both.empty:
        raise SystemExit("the run and the write-up have no epoch in common")
    both["diff"] = both["val_top1"] - both["test_top1"]
    log = writeup_log(args.post)
    # the run's images seen, in write-up epochs of 50,000 images (before its first: no value)
    seen = run.set_index("epoch")["train_images"].cumsum() / WRITEUP_IMAGES
    at = seen.reindex(both["epoch"]).to_numpy()
    same = np.interp(at, log["epoch"], log["test_top1"])
    both["test_same_images"] = np.where(at >= log["epoch"].min(), same, np.nan)
    both["diff_same_images"] = both["val_top1"] - both["test_same_images"]
    header = f"{'epoch':>5} {'write-up loss':>13} {'run loss':>8} {'write-up test':>13} "
    print(header + f"{'run val':>7} {'diff':>6}   {'write-up test, same images':>26} {'diff':>6}")
    for r in both.itertuples():
        same = "-" if np.isnan(r.test_same_images) else f"{r.test_same_images:.2f}%"
        same_diff = "-" if np.isnan(r.diff_same_images) else f"{r.diff_same_images:+.2f}"
        print(f"{r.epoch:5d} {r.loss:13.4f} {r.train_loss:8.4f} {r.test_top1:12.2f}% "
              f"{r.val_top1:6.2f}% {r.diff:+6.2f}   {same:>26} {same_diff:>6}")  # fmt: skip
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(log["epoch"], log["test_top1"], label="write-up: test top-1 (50k train)")
        ax.plot(run["epoch"], run["val_top1"], label=f"{args.run.name}: validation top-1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
    last = both.iloc[-1]
    print(
        json.dumps(
            {
                "epochs_compared": len(both),
                "mean_abs_diff_points": round(float(both["diff"].abs().mean()), 2),
                "max_abs_diff_points": round(float(both["diff"].abs().max()), 2),
                "mean_abs_diff_points_same_images": round(
                    float(both["diff_same_images"].abs().mean()), 2
                ),
                "last_epoch": int(last["epoch"]),
                "writeup_test_top1": float(last["test_top1"]),
                "writeup_test_top1_same_images": round(float(last["test_same_images"]), 2),
                "run_val_top1": round(float(last["val_top1"]), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
