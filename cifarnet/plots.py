"""results.png: loss and accuracy curves of a run."""

from __future__ import annotations

import os
from typing import Any

from cifarnet.checkpoint import atomic_write


def plot_history(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    ax_loss.plot(df["epoch"], df["train_loss"], label="train")
    ax_loss.plot(df["epoch"], df["val_loss"], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(df["epoch"], df["train_top1"], label="train top-1")
    ax_acc.plot(df["epoch"], df["val_top1"], label="validation top-1")
    ax_acc.plot(df["epoch"], df["val_top5"], label="validation top-5", linestyle="--")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
