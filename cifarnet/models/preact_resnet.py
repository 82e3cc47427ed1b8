"""Pre-activation residual networks (He et al. 2016, "Identity Mappings in Deep Residual
Networks"): each block is BN-ReLU-conv3x3-BN-ReLU-conv3x3 added to its input; where the shape
changes, the shortcut is a 1x1 convolution of the pre-activated input. A final BN-ReLU comes
before the pooling, since no block ends with one.

`PreActBlock` with `dropout` between its convolutions is also the Wide ResNet block
(cifarnet.models.wide_resnet).

preact_resnet18 shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 64, 32, 32) -> stages
(N, 64, 32, 32), (N, 128, 16, 16), (N, 256, 8, 8), (N, 512, 4, 4) -> pool (N, 512) -> logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarnet.models import register_model
from cifarnet.models.common import GlobalAvgPool, he_init


class PreActBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()  # not in place: the shortcut may read the pre-activated input
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(out)))))
        return out + residual


class PreActResNet(nn.Module):
    """A 3x3 stem, one stage of pre-activation blocks per width (stride 2 from the second),
    BN-ReLU, global average pooling and a linear layer."""

    def __init__(
        self,
        widths: Sequence[int],
        depths: Sequence[int],
        num_classes: int = 100,
        stem_width: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = stem_width or widths[0]
        self.conv1 = nn.Conv2d(3, in_channels, 3, 1, 1, bias=False)
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = [PreActBlock(in_channels, width, 1 if i == 0 else 2, dropout)]
            blocks += [PreActBlock(width, width, 1, dropout) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stages(self.conv1(x))))
        return self.fc(self.pool(x))


@register_model("preact_resnet18", "pre-activation ResNet-18: 64-128-256-512, [2,2,2,2]")
def preact_resnet18(num_classes: int = 100) -> PreActResNet:
    return PreActResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes)
