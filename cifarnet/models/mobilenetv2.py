"""MobileNetV2 (Sandler et al. 2018) for 32x32 inputs: torchvision's network (inverted
residual blocks, width 1.0, 1280-channel head) with the strides of the common CIFAR ports
(kuangliu/pytorch-cifar's MobileNetV2): stride 1 in the stem and in the 24-channel stage, so the
last stage sees 4x4 rather than 1x1. Unlike that port, blocks whose channels change have no
shortcut (the paper's design, and torchvision's), so the parameters are exactly torchvision's
less the 990 classes' head: 3,504,872 - 990 x 1,281 = 2,236,682 at 10 classes.

Shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 32, 32, 32) -> stages (N, 16, 32, 32),
(N, 24, 32, 32), (N, 32, 16, 16), (N, 64, 8, 8), (N, 96, 8, 8), (N, 160, 4, 4), (N, 320, 4, 4)
-> head (N, 1280, 4, 4) -> pool (N, 1280) -> logits (N, classes).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import MobileNetV2
from torchvision.ops import Conv2dNormActivation

from cifarnet.models import register_model

# expansion t, channels c, blocks n, stride s of the first block: the paper's Table 2 with the
# 24-channel stage at stride 1
CIFAR_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class CifarMobileNetV2(MobileNetV2):
    def __init__(self, num_classes: int = 100, dropout: float = 0.2) -> None:
        super().__init__(num_classes, inverted_residual_setting=CIFAR_SETTING, dropout=dropout)
        self.features[0] = Conv2dNormActivation(3, 32, stride=1, activation_layer=nn.ReLU6)
        nn.init.kaiming_normal_(self.features[0][0].weight, mode="fan_out")  # as torchvision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


@register_model("mobilenetv2", "MobileNetV2 1.0, CIFAR strides (stem and 24-channel stage at 1)")
def mobilenetv2(num_classes: int = 100, dropout: float = 0.2) -> CifarMobileNetV2:
    return CifarMobileNetV2(num_classes, dropout)
