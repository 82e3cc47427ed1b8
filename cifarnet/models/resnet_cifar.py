"""The CIFAR ResNets of He et al. 2016 ("Deep Residual Learning for Image Recognition", sec.
4.2): a 3x3 stem of 16 channels, three stages of n basic blocks with 16, 32 and 64 channels
(stride 2 at stages 2 and 3), global average pooling and one linear layer; 6n + 2 layers.

Shortcuts are the paper's option A (identity, zero-padded channels, stride-2 subsampling), which
adds no parameters: the paper's sizes (0.27 M for ResNet-20 ... 1.7 M for ResNet-110) are
those of option A; 1x1 projections (option B) would add 2,752 and put ResNet-32 1.5% over.

Shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 16, 32, 32) -> stages (N, 16, 32, 32),
(N, 32, 16, 16), (N, 64, 8, 8) -> pool (N, 64) -> logits (N, classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from cifarnet.models import register_model
from cifarnet.models.common import GlobalAvgPool, he_init


class PadShortcut(nn.Module):
    """Option A: keep every second pixel and zero-pad the new channels equally on both sides
    (in_channels -> out_channels, H x W -> H/2 x W/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pad = (out_channels - in_channels) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarResNetHe(nn.Module):
    def __init__(self, depth: int, num_classes: int = 100, widths=(16, 32, 64)) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            shortcut = PadShortcut(in_channels, width) if stride != 1 else None
            layers = [BasicBlock(in_channels, width, stride, shortcut)]
            layers += [BasicBlock(width, width) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(in_channels, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


def _register(depth: int) -> None:
    @register_model(f"resnet{depth}", f"He et al. 2016 CIFAR ResNet-{depth}: 16-32-64, option A")
    def build(num_classes: int = 100) -> CifarResNetHe:
        return CifarResNetHe(depth, num_classes)


for _depth in (20, 32, 44, 56, 110):
    _register(_depth)
