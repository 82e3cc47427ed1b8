"""Residual networks with a CIFAR stem (3x3 conv, no ImageNet max-pool).

`resnet_reference` is the write-up's network, layer for layer and with its initialisation; its
parameter names match the write-up's code, so its state dicts load either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarnet.models import register_model
from cifarnet.models.common import GlobalMaxPool


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut. The reference design has no ReLU after the
    addition; `relu_after_add=True` restores the usual He et al. block."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        relu_after_add: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = downsample
        self.relu_after_add = relu_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = out + residual
        return self.relu(out) if self.relu_after_add else out


class CifarResNet(nn.Module):
    """Stem conv3x3 -> BN -> ReLU -> Dropout2d, four stages of basic blocks (stride 2 at stages
    2-4), a pooling head and one linear layer.

    Shapes for 32x32 input and widths (32, 64, 128, 256): (N, 3, 32, 32) -> stem (N, 32, 32, 32)
    -> stages (N, 32, 32, 32), (N, 64, 16, 16), (N, 128, 8, 8), (N, 256, 4, 4) -> pool (N, 256)
    -> logits (N, classes).
    """

    def __init__(
        self,
        num_classes: int = 100,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (2, 4, 4, 2),
        stem_dropout: float = 0.02,
        shortcut: str = "conv3x3",
        pool: str = "max",
        relu_after_add: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in ("conv3x3", "conv1x1"):
            raise ValueError(f"shortcut must be 'conv3x3' or 'conv1x1', got {shortcut!r}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        for name, values in (("widths", widths), ("depths", depths)):
            if len(values) != 4 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
            ):
                raise ValueError(
                    f"{name} must be 4 positive integers (one per stage), got {values}"
                )
        self.in_channels = widths[0]
        self.shortcut = shortcut
        self.relu_after_add = relu_after_add
        self.conv1 = conv3x3(3, widths[0])
        self.bn = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout2d(p=stem_dropout)
        self.conv2_x = self._make_stage(widths[0], depths[0], 1)
        self.conv3_x = self._make_stage(widths[1], depths[1], 2)
        self.conv4_x = self._make_stage(widths[2], depths[2], 2)
        self.conv5_x = self._make_stage(widths[3], depths[3], 2)
        # The write-up pools with MaxPool2d(4, stride 1) over the 4x4 map: a global max for 32x32
        # input. Global pooling keeps other input sizes working (same result at 32x32).
        self.pool = GlobalMaxPool() if pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.fc_layer = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _make_stage(self, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_channels != out_channels:
            if self.shortcut == "conv3x3":
                conv = conv3x3(self.in_channels, out_channels, stride)
            else:
                conv = nn.Conv2d(self.in_channels, out_channels, 1, stride, bias=False)
            downsample = nn.Sequential(conv, nn.BatchNorm2d(out_channels))
        layers = [
            BasicBlock(self.in_channels, out_channels, stride, downsample, self.relu_after_add)
        ]
        self.in_channels = out_channels
        layers += [
            BasicBlock(out_channels, out_channels, relu_after_add=self.relu_after_add)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(self.relu(self.bn(self.conv1(x))))
        out = self.conv5_x(self.conv4_x(self.conv3_x(self.conv2_x(out))))
        return self.fc_layer(torch.flatten(self.pool(out), 1))


def zero_init_residual(model: nn.Module) -> int:
    """Set the last BatchNorm scale of every residual branch to zero, so each block starts as
    its shortcut (Goyal et al., 2017) and a deep stack trains stably at a high lr from step one.
    Returns the number of blocks changed (0 for a model without basic blocks)."""
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    with torch.no_grad():
        for block in blocks:
            block.bn2.weight.zero_()
    return len(blocks)


@register_model("resnet_reference", "the write-up's ResNet: 32-64-128-256, [2,4,4,2] basic blocks")
def resnet_reference(num_classes: int = 100, relu_after_add: bool = False) -> CifarResNet:
    return CifarResNet(num_classes, relu_after_add=relu_after_add)


@register_model("resnet18", "ResNet-18, CIFAR stem: 64-128-256-512, [2,2,2,2], 1x1 shortcuts")
def resnet18(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(
        num_classes, (64, 128, 256, 512), (2, 2, 2, 2), 0.0, "conv1x1", "avg", relu_after_add=True
    )


@register_model("resnet34", "ResNet-34, CIFAR stem: 64-128-256-512, [3,4,6,3], 1x1 shortcuts")
def resnet34(num_classes: int = 100) -> CifarResNet:
    return CifarResNet(
        num_classes, (64, 128, 256, 512), (3, 4, 6, 3), 0.0, "conv1x1", "avg", relu_after_add=True
    )


@register_model("resnet", "configurable CIFAR ResNet: widths=, depths=, pool=, shortcut= kwargs")
def resnet(
    num_classes: int = 100,
    widths: Sequence[int] = (32, 64, 128, 256),
    depths: Sequence[int] = (2, 2, 2, 2),
    stem_dropout: float = 0.0,
    shortcut: str = "conv1x1",
    pool: str = "avg",
    relu_after_add: bool = True,
) -> CifarResNet:
    return CifarResNet(
        num_classes, tuple(widths), tuple(depths), stem_dropout, shortcut, pool, relu_after_add
    )
