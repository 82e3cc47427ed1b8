"""The optimizer and its learning rate: SGD's parameter groups, the lr schedule (warm-up, then
cosine, linear or plateau decay) and the plateau schedule's cuts.

Schedules are functions of the run's progress in [0, 1]: steps done / total steps, or elapsed
seconds / budget with `--time`, so one schedule serves both. The plateau schedule (the
write-up's "divide by 10 when validation error plateaus") has state: `LrSchedule` applies
torch's ReduceLROnPlateau's cuts on top of its warm-up.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from cifarnet.config.settings import TrainConfig
from cifarnet.training.state import Progress

MAX_WARMUP_FRACTION = 0.2


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD over the trainable parameters. BatchNorm and bias parameters (1-d tensors) get
    their lr scaled by `bias_lr_scale` and weight decay only with `decay_norm_and_bias`; with
    that set and no lr scale it is the write-up's single group (`SGD(model.parameters())`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.decay_norm_and_bias and config.bias_lr_scale == 1.0:
        groups: list[dict[str, Any]] = [{"params": params, "lr_scale": 1.0}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "lr_scale": 1.0},
            {
                "params": [p for p in params if p.ndim <= 1],
                "lr_scale": config.bias_lr_scale,
                "weight_decay": config.weight_decay if config.decay_norm_and_bias else 0.0,
            },
        ]
    for group in groups:
        group["lr"] = config.lr * group["lr_scale"]
        # the plateau schedule's cuts so far; in every group from the start, so that any
        # last.pt (even one saved mid-warm-up) carries it and only older files are migrated
        group["plateau_factor"] = 1.0
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def build_plateau(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The plateau schedule's lr cuts (by 10 after `plateau_patience` epochs without
    improvement), or None for the other schedules."""
    if config.schedule != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.plateau_patience
    )


def lr_factor(schedule: str, progress: float, warmup_fraction: float) -> float:
    """Multiplier of the peak lr at `progress`: linear warm-up from 0, then the decay shape
    (1 for plateau, whose cuts LrSchedule applies on top)."""
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


def warmup_fraction(config: TrainConfig) -> float:
    """warmup_epochs as a share of the run, at most MAX_WARMUP_FRACTION: a short run (say 3
    epochs of a 2-epoch-warm-up recipe) must not spend most of itself warming up."""
    return min(config.warmup_epochs / config.epochs, MAX_WARMUP_FRACTION)


def progress_fraction(config: TrainConfig, progress: Progress, steps_per_epoch: int) -> float:
    """How far the run is, in [0, 1] (more once done): by steps, or by time with --time."""
    if config.time_minutes is not None:
        return progress.elapsed_seconds / progress.step_budget_seconds(config.time_minutes)
    return progress.global_step / (config.epochs * steps_per_epoch)


class LrSchedule:
    """Sets the optimizer's lr step by step, and applies the plateau schedule's cuts."""

    def __init__(
        self,
        config: TrainConfig,
        optimizer: torch.optim.Optimizer,
        plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None,
    ) -> None:
        self.config, self.optimizer, self.plateau = config, optimizer, plateau

    def set_lr(self, progress: Progress, steps_per_epoch: int) -> float:
        """Set every group's lr for the coming step; returns the main group's."""
        c = self.config
        factor = lr_factor(
            c.schedule, progress_fraction(c, progress, steps_per_epoch), warmup_fraction(c)
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self._peak_lr(group) * factor
        return self.optimizer.param_groups[0]["lr"]

    def _peak_lr(self, group: dict[str, Any]) -> float:
        """The group's lr before the schedule's factor: --lr times the group's scale, times the
        cuts the plateau schedule has made so far."""
        return self.config.lr * group["lr_scale"] * group.get("plateau_factor", 1.0)

    def end_epoch(self, error: float) -> None:
        """With the plateau schedule: count an epoch's error (validation error in percent, or
        the training loss) towards a cut. ReduceLROnPlateau cuts each group's lr in place. It
        is shown the peak lrs (never a warm-up value), and its cut is kept as the group's
        plateau_factor, which the optimizer's state (and so every checkpoint) carries."""
        if self.plateau is None:
            return
        groups = self.optimizer.param_groups
        for group in groups:
            group["lr"] = self._peak_lr(group)
        self.plateau.step(error)
        # the cut is the same for every group; read it off the main one (lr_scale 1, while
        # bias_lr_scale may be 0)
        factor = groups[0]["lr"] / self.config.lr
        for group in groups:
            group["plateau_factor"] = factor
