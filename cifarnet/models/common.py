"""Pieces the model families share: global average and max pooling, and the usual initialisation."""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C), the mean over the spatial axes. A plain reduction rather than
    adaptive pooling: every ONNX exporter and runtime takes it, at any input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class GlobalMaxPool(nn.Module):
    """(N, C, H, W) -> (N, C), the maximum over the spatial axes: the same numbers and the same
    gradient as nn.AdaptiveMaxPool2d(1) flattened (all of it to one position of the maximum),
    and no parameters or buffers, so state dicts are unchanged.

    A max over the flattened axes rather than adaptive max pooling, which the dynamo-based ONNX
    exporter of torch 2.11 cannot translate; and `max` with its indices rather than `amax`,
    whose backward under torch.compile with bf16 autocast compares the recomputed input with
    the rounded maximum, finds no match after a fused GELU or BatchNorm, and divides by that
    zero count: NaN gradients from the first step (seen with torch 2.14 on the CPU; the same
    fault is reported for CUDA)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).max(dim=2).values


def he_init(model: nn.Module) -> nn.Module:
    """Kaiming-normal convolutions (fan_out, as torchvision's ResNets), BatchNorm scale 1 and
    shift 0, linear biases 0; returns `model`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    return model
