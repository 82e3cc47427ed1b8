"""The weight average (--ema) without a device synchronisation per step.

torch's AveragedModel keeps its update counter (`n_averaged`) on the CPU and copies it to the
device at every update: on a GPU a blocking host-to-device copy that waits for the stream each
step. An exponential average does not use the counter, so `Ema` averages without that copy; its
state (and so last.pt's `ema_state_dict`) is AveragedModel's.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class Ema(AveragedModel):
    """An exponential moving average of `model`'s parameters and buffers with `decay`."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Average `model` in (the first update copies it), as AveragedModel does."""
        if self.n_averaged.item() == 0:  # a CPU tensor: no device synchronisation
            super().update_parameters(model)
            return
        groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
        averaged = itertools.chain(self.module.parameters(), self.module.buffers())
        current = itertools.chain(model.parameters(), model.buffers())
        for mine, theirs in zip(averaged, current, strict=True):
            pair = groups.setdefault((mine.device, mine.dtype), ([], []))
            pair[0].append(mine.detach())
            pair[1].append(theirs.detach().to(mine.device))
        for mine_list, theirs_list in groups.values():
            # the EMA ignores its third argument, the count
            self.multi_avg_fn(mine_list, theirs_list, None)
        self.n_averaged += 1
