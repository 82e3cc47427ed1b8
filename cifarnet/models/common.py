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
    """(N, C, H, W) -> (N, C), the maximum over the spatial axes: the same numbers as
    nn.AdaptiveMaxPool2d(1) flattened, and no parameters or buffers, so state dicts are
    unchanged. A reduction because the dynamo-based ONNX exporter of torch 2.11 has no
    translation of adaptive max pooling, while every exporter takes a max reduction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((2, 3))


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
