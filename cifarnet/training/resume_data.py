"""A resume's check that its data is the copy the run was trained on: the validation split and
the subset are drawn by position, so another copy, or the same images in another order, would
silently put validation images into training. As `evaluate --split val` checks it."""

from __future__ import annotations

import os
from typing import Any

from cifarnet.errors import DataError
from cifarnet.io.checkpoint import SavedRun


def check_same_training_data(
    ckpt: dict[str, Any], data_info: dict[str, Any], source: str, path: str | os.PathLike
) -> None:
    """Refuse (DataError) a resume whose training data (found in `source`) has another
    fingerprint than the one the checkpoint at `path` recorded. A checkpoint without one
    (written before fingerprints) is taken at its word."""
    saved = SavedRun(ckpt).data.get("train_fingerprint")
    found = data_info.get("train_fingerprint")
    if saved is not None and found != saved:
        raise DataError(
            f"--resume {path}: {source} is not the copy of {data_info.get('dataset')} the run "
            "was trained on (its training images or their order differ), so the run's "
            "validation split and subset would be drawn differently; resume with the run's "
            "own data (--data-dir) or start a new run"
        )
