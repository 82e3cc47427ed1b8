"""The batch loader: shuffled batches cut from uint8 tensors already on the device."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from cifarnet.data.augment import Augment, Normalize

if TYPE_CHECKING:  # policies import torchvision: only a training run with a policy needs it
    from cifarnet.data.policies import SeededPolicy


class BatchLoader:
    """Batches from uint8 tensors already on the device: shuffled and augmented for training.

    Randomness comes from one generator that the caller owns (and can save), so an epoch can be
    replayed or resumed mid-way exactly; a `policy` (AutoAugment, ..., random erasing) draws
    from its own generator, keyed by the seed, the epoch and the step.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        normalize: Normalize,
        augment: Augment | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        policy: SeededPolicy | None = None,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self.images, self.labels = images, labels
        # (rank, processes) of a distributed run: each batch cut from `images` is the global
        # batch, and this process takes its slice of it
        self.rank, self.processes = share
        # drop_last: leave out an epoch's partial last batch (when there is a full one)
        self.drop_last = drop_last
        self.batch_size = batch_size
        self.normalize, self.augment, self.shuffle = normalize, augment, shuffle
        self.policy = policy

    def __len__(self) -> int:
        n = len(self.labels)
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def epoch_order(self, generator: torch.Generator | None) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.images.device)
        return torch.randperm(n, device=self.images.device, generator=generator)

    def batches(
        self,
        generator: torch.Generator | None = None,
        order: torch.Tensor | None = None,
        start: int = 0,
        epoch: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x float (B, 3, H, W), y int64 (B,)) for batches start.., in `order` (default: new);
        `epoch` keys the policy's draws. Crop and flip, then the policy, then normalisation."""
        if order is None:
            order = self.epoch_order(generator)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment is not None:
                assert generator is not None, "augmentation needs a generator"
                # the whole global batch: the generator draws the same on every process
                x = self.augment(x, generator)
            if self.policy is not None:
                x = self.policy(x, epoch, i + 1)  # step i + 1, as the trainer counts
            lo = len(idx) * self.rank // self.processes
            hi = len(idx) * (self.rank + 1) // self.processes
            yield self.normalize(x[lo:hi]), self.labels[idx[lo:hi]]
