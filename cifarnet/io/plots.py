"""results.png: loss and accuracy curves of a run."""

from __future__ import annotations

import os
from typing import Any

from cifarnet.io.atomic import atomic_write


def plot_history(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write results.png: loss and accuracy per epoch from metrics rows (train and val)."""
    import pandas as pd

    # a Figure without pyplot: no backend to select (which would change the caller's, e.g. a
    # notebook's) and nothing left in pyplot's registry of open figures
    from matplotlib.figure import Figure

    df = pd.DataFrame(rows)
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    # markers, so that a one-epoch run still shows its points
    marker = "o" if len(df) <= 30 else None
    series = [
        (ax_loss, "train_loss", "train", "-"),
        (ax_loss, "val_loss", "validation", "-"),
        (ax_acc, "train_top1", "train top-1", "-"),
        (ax_acc, "val_top1", "validation top-1", "-"),
        (ax_acc, "val_top5", "validation top-5", "--"),
    ]
    for ax, column, label, style in series:
        values = pd.to_numeric(df[column], errors="coerce")
        if values.notna().any():  # no validation split: no validation lines in the legend
            ax.plot(df["epoch"], values, label=label, linestyle=style, marker=marker, markersize=3)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
