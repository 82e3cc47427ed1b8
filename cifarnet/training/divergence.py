"""Divergence: a non-finite loss or non-finite weights stop a run before they reach a checkpoint,
with an error that says what was kept and what to try."""

from __future__ import annotations

import torch
from torch import nn

from cifarnet.errors import DivergenceError
from cifarnet.training.state import Progress


def check_weights(model: nn.Module, where: str, lr: float, progress: Progress) -> None:
    """An update can overflow the weights while the loss that drove it was still finite:
    never let such weights reach best.pt or last.pt."""
    finite = [v.isfinite().all() for v in model.state_dict().values() if v.is_floating_point()]
    if not torch.stack(finite).all():
        raise diverged(f"the weights hold NaN/Inf at {where}", lr, progress)


def diverged(what: str, lr: float, progress: Progress) -> DivergenceError:
    """The error for a run that diverged (`what` happened at the step's `lr`)."""
    p = progress
    kept = (
        f"last.pt keeps the weights of epoch {p.epoch}, best.pt of epoch {p.best_epoch}"
        if p.epoch
        else "no checkpoint was saved yet"
    )
    return DivergenceError(
        f"training diverged: {what} (lr {lr:.4g}); try a lower --lr or --precision fp32. " + kept
    )
