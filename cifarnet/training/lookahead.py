"""Lookahead (--lookahead), as airbench trains: slow weights that the model restarts from.

Every `EVERY` steps the slow weights move toward the model's by (1 - decay) and the model is
reset to them; decay grows as the cube of the run's progress, from 0 (the slow weights follow
the model) to PEAK_DECAY at the end (each sync keeps 77% of the slow weights). Late in the run,
when the steps are small and noisy, this averages them at no cost in steps. BatchNorm's running
statistics are averaged with the weights, as in airbench; integer buffers (the batch counter)
are left alone.
"""

from __future__ import annotations

import torch
from torch import nn

EVERY = 5  # steps between syncs
PEAK_DECAY = 0.95**EVERY  # the slow weights' share at a sync at the very end of the run


def _floating_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's floating-point parameters and buffers, by state_dict name (sharing storage
    with the model: an in-place write changes the model)."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


class Lookahead:
    """The slow weights of `model` (a copy of it when made)."""

    def __init__(self, model: nn.Module) -> None:
        self.slow = {k: v.detach().clone() for k, v in _floating_state(model).items()}

    @torch.no_grad()
    def after_step(self, model: nn.Module, global_step: int, progress: float) -> None:
        """After step `global_step` (counted from 1), at `progress` in [0, 1] of the run: every
        EVERY steps, pull the slow weights toward the model's and restart the model from them."""
        if global_step % EVERY:
            return
        decay = PEAK_DECAY * min(max(progress, 0.0), 1.0) ** 3
        live = list(_floating_state(model).values())
        slow = list(self.slow.values())
        torch._foreach_lerp_(slow, live, 1.0 - decay)
        torch._foreach_copy_(live, slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The slow weights, as CPU tensors by state_dict name (last.pt's lookahead_state)."""
        return {k: v.detach().cpu() for k, v in self.slow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore slow weights saved by `state_dict`. A state that is not this model's (other
        names, a shape or a non-tensor value) raises TypeError, KeyError or ValueError."""
        if not isinstance(state, dict):
            raise TypeError(f"lookahead_state is a {type(state).__name__}, not a dict")
        if state.keys() != self.slow.keys():
            raise KeyError("lookahead_state does not hold this model's weights")
        for name, value in state.items():
            if not isinstance(value, torch.Tensor) or value.shape != self.slow[name].shape:
                raise ValueError(f"lookahead_state's {name} is not this model's shape")
            self.slow[name].copy_(value)
