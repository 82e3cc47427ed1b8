"""metrics.csv: one row per epoch with fixed columns, flushed and fsynced as each epoch ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from cifarnet.io.tables import write_csv

# accuracies in percent, times in seconds, lr as applied at the end of the epoch
COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "train_images",
    "epoch_seconds",
    "images_per_second",
    "elapsed_seconds",
]


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


class MetricsLog:
    """A run's metrics.csv; `enabled` False (a distributed run's processes other than rank 0)
    writes nothing."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def rewrite(self, rows: list[dict[str, Any]]) -> None:
        """Replace the file with exactly these rows (header only when empty), atomically."""
        if self.enabled:
            write_csv(rows, self.path, COLUMNS)

    def append(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = _frame([row]).to_csv(index=False, header=False)
        with open(self.path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
