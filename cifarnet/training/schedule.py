"""Learning-rate schedules as pure functions of training progress in [0, 1].

Progress is steps done / total steps, or elapsed seconds / budget with `--time`, so one schedule
serves both. The plateau schedule (the write-up's "divide by 10 when validation error
plateaus") has state: here it is only its warm-up; the trainer applies torch's
ReduceLROnPlateau's cuts on top.
"""

from __future__ import annotations

import math


def lr_factor(schedule: str, progress: float, warmup_fraction: float) -> float:
    """Multiplier of the peak lr at `progress`: linear warm-up from 0, then the decay shape
    (1 for plateau, whose cuts the trainer applies on top)."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return progress / warmup_fraction
    if schedule == "plateau":
        return 1.0
    rest = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    if schedule == "linear":
        return 1.0 - rest
    raise ValueError(f"unknown schedule {schedule!r}")
