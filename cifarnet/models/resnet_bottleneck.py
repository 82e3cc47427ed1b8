"""ResNet-50 / ResNet-101 with a CIFAR stem: torchvision's ResNet (bottleneck blocks, stride on
the 3x3 convolution, 1x1 projection shortcuts) with its 7x7 stride-2 stem and max-pool replaced
by one 3x3 stride-1 convolution, as in the common CIFAR ports (e.g. kuangliu/pytorch-cifar).

Shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 64, 32, 32) -> stages (N, 256, 32, 32),
(N, 512, 16, 16), (N, 1024, 8, 8), (N, 2048, 4, 4) -> pool (N, 2048) -> logits (N, classes).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from cifarnet.models import register_model
from cifarnet.models.common import GlobalAvgPool


class CifarBottleneckResNet(ResNet):
    def __init__(self, layers: Sequence[int], num_classes: int = 100) -> None:
        super().__init__(Bottleneck, list(layers), num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        # torchvision's forward flattens after this; on (N, C) that is a no-op
        self.avgpool = GlobalAvgPool()


@register_model("resnet50", "ResNet-50, CIFAR stem: bottleneck blocks [3,4,6,3], 256-2048 wide")
def resnet50(num_classes: int = 100) -> CifarBottleneckResNet:
    return CifarBottleneckResNet((3, 4, 6, 3), num_classes)


@register_model("resnet101", "ResNet-101, CIFAR stem: bottleneck blocks [3,4,23,3], 256-2048 wide")
def resnet101(num_classes: int = 100) -> CifarBottleneckResNet:
    return CifarBottleneckResNet((3, 4, 23, 3), num_classes)
