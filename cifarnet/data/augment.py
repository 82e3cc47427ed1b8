"""Batched augmentation, progressive resizing and normalisation, on the batch's device.

Augmentation runs per batch with tensor ops, never per image in Python: the PIL-per-image loader
is what makes the reference loop slow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Batched augmentation: random crop from a zero-padded image and horizontal flip, optional
    Cutout. All on the batch's device, randomness from the caller's generator."""

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images: uint8 (N, C, H, W) -> uint8 (N, C, H, W), each sample transformed on its own."""
        n, c, h, w = images.shape
        dev = images.device
        if self.crop_padding:
            p = self.crop_padding
            padded = F.pad(images, (p, p, p, p))  # zeros, like torchvision's RandomCrop(padding=p)
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), device=dev, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), device=dev, generator=generator)
            # rows[n, :, i, :] = i + dy[n] selects H of the H+2p rows; then cols likewise for W
            rows = (torch.arange(h, device=dev).view(1, 1, h, 1) + dy).expand(n, c, h, w + 2 * p)
            cols = (torch.arange(w, device=dev).view(1, 1, 1, w) + dx).expand(n, c, h, w)
            images = padded.gather(2, rows).gather(3, cols)
        if self.flip:
            flip = torch.rand(n, device=dev, generator=generator) < 0.5
            images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
        if self.cutout:
            images = _cutout(images, self.cutout, generator)
        return images


def _cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    half = size // 2
    hole = ((ys - cy).abs() <= half - (1 - size % 2) * (ys >= cy)) & (
        (xs - cx).abs() <= half - (1 - size % 2) * (xs >= cx)
    )
    return images.masked_fill(hole.unsqueeze(1), 0)


def training_resolution(start: int, progress: float, full: int = 32, ramp: float = 0.75) -> int:
    """Progressive resizing: the side length (px) at `progress` in [0, 1], growing linearly from
    `start` to `full` over the first `ramp` of training, in 4-px steps (few distinct shapes, so
    few kernel re-plans or recompiles)."""
    if start >= full:
        return full
    size = start + (full - start) * min(progress / ramp, 1.0)
    return min(full, int(size) // 4 * 4 if size < full else full)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size), antialiased bilinear; a no-op at full size."""
    if x.shape[-1] == size:
        return x
    memory_format = (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    out = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.contiguous(memory_format=memory_format)


class Normalize:
    """uint8 (N, 3, H, W) -> float (N, 3, H, W): (x / 255 - mean) / std as one multiply-add."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, 3, 1, 1) / std_t
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, images.float(), self.scale)
        return x.contiguous(memory_format=self.memory_format)
