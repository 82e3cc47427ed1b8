"""MixUp and CutMix on a training batch: each image is blended with (MixUp) or has a box pasted
from (CutMix) its partner, the batch reversed, and the labels become the matching soft targets.

The batch order is already shuffled, so reversing it pairs images at random without a second
permutation. The mixing ratio is drawn on the host from a generator keyed by (seed, epoch, step):
no device sync, and a run resumed mid-epoch draws exactly what it would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchMix:
    """mixup / cutmix: Beta(alpha, alpha) concentrations, 0 = off. With both on, each batch
    uses one of the two, chosen with equal odds."""

    mixup: float = 0.0
    cutmix: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, key: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, C, H, W) float, labels (N,) int -> mixed images (N, C, H, W) and soft
        targets (N, num_classes) float32 whose rows sum to 1. `key` seeds this batch's draw
        (e.g. (seed, epoch, step))."""
        rng = np.random.default_rng([k % 2**64 for k in key])  # numpy refuses negative seeds
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < 0.5)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))  # share of each image that stays its own
        partner = images.flip(0)
        if use_cutmix:
            images, lam = _paste_box(images, partner, lam, rng)
        else:
            images = torch.lerp(partner, images, lam)
        onehot = F.one_hot(labels, num_classes).float()
        return images, torch.lerp(onehot.flip(0), onehot, lam)


def _paste_box(
    images: torch.Tensor, partner: torch.Tensor, lam: float, rng: np.random.Generator
) -> tuple[torch.Tensor, float]:
    """Paste the same box of `partner` into every image: a box covering about 1 - lam of the
    image, centred uniformly and clipped at the borders. Returns the images and the share of
    each image left its own after clipping (exact, in pixels)."""
    h, w = images.shape[-2:]
    cut_h, cut_w = round(h * math.sqrt(1.0 - lam)), round(w * math.sqrt(1.0 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, w)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
