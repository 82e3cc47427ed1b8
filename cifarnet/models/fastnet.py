"""FastNet: a wide, shallow network built for time-to-accuracy (after the airbench family).

Stem: a 2x2 convolution whose filters can be set to whiten the image patches of the training set
(`init_whitening`), then three stages of conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN ->
GELU, a global max-pool and a linear head whose logits are scaled down (a fixed temperature
that lets the net train at a high learning rate). With `convs_per_stage=3` (airbench96's
layout) each stage has a third conv3x3 -> BN, and the last two convolutions form a residual
branch: y = GELU(x + BN(conv(GELU(BN(conv(x)))))) after the first conv's GELU.

Shapes for 32x32 input, widths (64, 256, 384): (N, 3, 32, 32) -> stem (N, 2*3*2*2, 31, 31)
-> stages (N, 64, 15, 15), (N, 256, 7, 7), (N, 384, 3, 3) -> pool (N, 384) -> (N, classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cifarnet.models import register_model
from cifarnet.models.common import GlobalMaxPool


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with a fixed scale of 1 (only the shift is learned) and fast-moving running
    statistics (momentum 0.4): a run of a few epochs needs its statistics to keep up."""
    bn = nn.BatchNorm2d(channels, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class ConvStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, residual: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = _batch_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = _batch_norm(out_channels)
        self.act = nn.GELU()
        self.residual = residual
        if residual:
            self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            self.bn3 = _batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        if not self.residual:
            return self.act(self.bn2(self.conv2(x)))
        branch = self.bn3(self.conv3(self.act(self.bn2(self.conv2(x)))))
        return self.act(x + branch)


class FastNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 100,
        widths: Sequence[int] = (64, 256, 384),
        logit_scale: float = 1 / 9,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if convs_per_stage not in (2, 3):
            raise ValueError(f"convs_per_stage must be 2 or 3, got {convs_per_stage!r}")
        # 2x2 patches of 3 channels = 12 values; the whitening stem keeps +/- of each eigen-
        # direction (24 channels) so that the GELU after it loses no information.
        self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
        # The whitening is a fixed property of the data, not something to learn: set by
        # init_whitening (or loaded from a checkpoint), never trained. Frozen here rather than in
        # init_whitening so a resumed run, which skips it, builds the same optimizer groups.
        # Freezing also spares the backward pass its largest gradient (w.r.t. the 31x31 output).
        self.whiten.requires_grad_(False)
        self.act = nn.GELU()
        stages, in_channels = [], 24
        for width in widths:
            stages.append(ConvStage(in_channels, width, residual=convs_per_stage == 3))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = GlobalMaxPool()
        self.head = nn.Linear(in_channels, num_classes, bias=False)
        self.logit_scale = logit_scale
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.whiten:
                # identity on the first in_channels filters (the rest keep torch's default init):
                # the net starts close to a shallow one and tolerates a high learning rate
                nn.init.dirac_(m.weight[: m.in_channels])

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to ZCA-like whitening of 2x2 patches. images: normalised float
        (N, 3, H, W), a few thousand training images are enough."""
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, 3, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        patches = patches - patches.mean(0, keepdim=True)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).view(12, 3, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.act(self.whiten(x)))
        return self.head(self.pool(x)) * self.logit_scale


@register_model("fastnet", "wide shallow net for time-to-accuracy: whitening stem, 3 stages, GELU")
def fastnet(
    num_classes: int = 100,
    widths: Sequence[int] = (64, 256, 384),
    logit_scale: float = 1 / 9,
    convs_per_stage: int = 2,
) -> FastNet:
    return FastNet(num_classes, tuple(widths), logit_scale, convs_per_stage)
