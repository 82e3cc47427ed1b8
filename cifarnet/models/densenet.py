"""DenseNet-BC for CIFAR (Huang et al. 2017, "Densely Connected Convolutional Networks"):
torchvision's DenseNet (bottleneck layers BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), transitions
that halve the channels and the resolution) with the paper's CIFAR stem: one 3x3 convolution
to 2k channels, no BN-ReLU or max-pool after it, and three dense blocks.

DenseNet-BC-100-12 shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 24, 32, 32) -> blocks
(N, 216, 32, 32) -> (N, 108, 16, 16), (N, 300, 16, 16) -> (N, 150, 8, 8), (N, 342, 8, 8)
-> pool (N, 342) -> logits (N, classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import DenseNet

from cifarnet.models import register_model


class CifarDenseNet(DenseNet):
    def __init__(
        self, depth: int, growth_rate: int, num_classes: int = 100, dropout: float = 0.0
    ) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        layers = (depth - 4) // 6  # per block: 3 blocks of bottleneck layers (2 convs each)
        super().__init__(
            growth_rate, (layers,) * 3, 2 * growth_rate, 4, dropout, num_classes=num_classes
        )
        self.features.conv0 = nn.Conv2d(3, 2 * growth_rate, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.features.conv0.weight)  # as torchvision's own init
        self.features.norm0 = self.features.relu0 = self.features.pool0 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))  # features end with the final BatchNorm
        return self.classifier(out.mean((2, 3)))


@register_model("densenet_bc_100_12", "DenseNet-BC-100, growth rate 12: 3 blocks of 16 layers")
def densenet_bc_100_12(num_classes: int = 100, dropout: float = 0.0) -> CifarDenseNet:
    return CifarDenseNet(100, 12, num_classes, dropout)
