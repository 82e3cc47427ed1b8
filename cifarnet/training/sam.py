"""Sharpness-aware minimisation (Foret et al. 2021) and its adaptive variant ASAM (Kwon et al.
2021), as in the reference implementation (github.com/davda54/sam): a wrapper around the
optimizer the trainer already has.

One SAM step is two forward-backward passes on the same batch:

1. the gradient g at the weights w;
2. `first_step`: move to w + e, e = rho * g / ||g|| (ASAM: e = rho * w^2 g / ||w g||, with
   element-wise products, so the step is scaled by each weight's size);
3. the gradient at w + e;
4. `second_step`: back to w, then the base optimizer's step with that second gradient.

The base optimizer keeps its own state, parameter groups and learning rates, so a learning-rate
schedule and a checkpoint's optimizer state work on it as without SAM; SAM keeps nothing between
steps. `sam_step` runs the four parts given a closure that computes the loss, and keeps the
second pass from touching BatchNorm running statistics (the perturbed weights' batch statistics
are not the network's).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cifarnet.errors import ConfigError


class SAM:
    """`SAM(base_optimizer, rho, adaptive)`: `first_step()` after the first backward pass,
    `second_step()` after the second. rho: the radius of the neighbourhood (the paper's 0.05
    for SAM on CIFAR; ASAM's authors use about 10x larger, e.g. 0.5-2.0)."""

    def __init__(
        self, base_optimizer: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False
    ) -> None:
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho):
            raise ConfigError(f"SAM rho must be a positive number, got {rho!r}")
        if rho <= 0:
            raise ConfigError(f"SAM rho must be positive, got {rho}; leave SAM off instead of 0")
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = adaptive
        self._origin: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, its weights)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimizer's groups (learning rates, weight decay): one set for both."""
        return self.base_optimizer.param_groups

    def _scaled_grads(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, T(w) g) for every parameter with a gradient; T(w) = |w| for ASAM, 1
        for SAM."""
        return [
            (p, p.grad * p.abs() if self.adaptive else p.grad)
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        ]

    @torch.no_grad()
    def first_step(self) -> None:
        """Move each weight to w + e along its gradient (kept for `second_step` to go back)."""
        scaled = self._scaled_grads()
        if not scaled:
            self._origin = []
            return
        device = scaled[0][0].device
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g).to(device) for _, g in scaled])
        )
        scale = self.rho / (norm + 1e-12)  # a device tensor: no host sync
        self._origin = []
        for p, g in scaled:
            self._origin.append((p, p.detach().clone()))
            # SAM: e = rho g / ||g||; ASAM: e = rho |w| (|w| g) / |||w| g||
            e = (g * p.abs() if self.adaptive else g) * scale.to(p)
            p.add_(e)

    @torch.no_grad()
    def second_step(self) -> None:
        """Restore the weights of `first_step` and take the base optimizer's step with the
        gradient computed at the perturbed weights."""
        for p, weights in self._origin:
            p.copy_(weights)
        self._origin = []
        self.base_optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state: SAM itself keeps nothing between steps."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state)


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers still normalise with the batch's statistics (in train mode) but their
    running mean, variance and batch count are as before when the block ends."""
    buffers = [
        buffer
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
        for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


def sam_step(sam: SAM, model: nn.Module, closure: Callable[[], Any]) -> Any:
    """One SAM training step on one batch. `closure()` runs the forward pass and returns the
    loss, or a tuple whose first item is the loss (e.g. (loss, logits)); it is called twice and
    must not call backward. Returns what the first call returned: the loss at the weights
    themselves. BatchNorm running statistics are updated by the first pass only; gradients are
    cleared before and after."""
    sam.zero_grad()
    first = closure()
    _loss(first).backward()
    sam.first_step()
    sam.zero_grad()
    with frozen_batchnorm_stats(model):
        _loss(closure()).backward()
    sam.second_step()
    sam.zero_grad()
    return first


def check_sam_precision(precision: str) -> None:
    """SAM's two backward passes and fp16's loss scaling do not share one scaler step (the
    gradient of the first pass would have to be unscaled and checked for overflow on its own):
    refused rather than approximated. `precision`: the run's resolved precision."""
    if precision == "fp16":
        raise ConfigError(
            "--sam does not work with fp16 (its loss scaling); use --precision bf16 or fp32"
        )


def _loss(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output
