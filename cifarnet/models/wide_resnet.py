"""Wide ResNets (Zagoruyko & Komodakis 2016): WRN-d-k has a 16-channel 3x3 stem and three
stages of (d - 4) / 6 pre-activation blocks with 16k, 32k and 64k channels (stride 2 at stages 2
and 3); `dropout` is applied between the two convolutions of every block (the paper's 0.3 in
its dropout rows; 0 by default).

WRN-28-10 shapes for 32x32 input: (N, 3, 32, 32) -> stem (N, 16, 32, 32) -> stages
(N, 160, 32, 32), (N, 320, 16, 16), (N, 640, 8, 8) -> pool (N, 640) -> logits (N, classes).
"""

from __future__ import annotations

from cifarnet.models import register_model
from cifarnet.models.preact_resnet import PreActResNet


def wide_resnet(
    depth: int, width: int, num_classes: int = 100, dropout: float = 0.0
) -> PreActResNet:
    """WRN-`depth`-`width`: depth = 6n + 4."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    n = (depth - 4) // 6
    widths = (16 * width, 32 * width, 64 * width)
    return PreActResNet(widths, (n, n, n), num_classes, stem_width=16, dropout=dropout)


@register_model("wrn_16_8", "Wide ResNet-16-8: 128-256-512, 2 blocks per stage; dropout=")
def wrn_16_8(num_classes: int = 100, dropout: float = 0.0) -> PreActResNet:
    return wide_resnet(16, 8, num_classes, dropout)


@register_model("wrn_28_10", "Wide ResNet-28-10: 160-320-640, 4 blocks per stage; dropout=")
def wrn_28_10(num_classes: int = 100, dropout: float = 0.0) -> PreActResNet:
    return wide_resnet(28, 10, num_classes, dropout)


@register_model("wrn_40_4", "Wide ResNet-40-4: 64-128-256, 6 blocks per stage; dropout=")
def wrn_40_4(num_classes: int = 100, dropout: float = 0.0) -> PreActResNet:
    return wide_resnet(40, 4, num_classes, dropout)
