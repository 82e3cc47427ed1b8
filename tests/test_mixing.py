"""MixUp / CutMix: images and soft targets agree, draws are keyed, and the train step scores
soft targets by their largest share."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifarnet.data.mixing import BatchMix
from cifarnet.runtime.device import resolve_runtime
from cifarnet.training.step import train_step

CLASSES = 10


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return images.contiguous(memory_format=torch.channels_last), torch.arange(n) % CLASSES


def test_mixup_blends_each_image_with_its_partner_by_the_target_share() -> None:
    images, labels = _batch()
    mixed, targets = BatchMix(mixup=0.4)(images, labels, CLASSES, (0, 1, 1))
    lam = targets[0, labels[0]].item()  # labels 0..7 are distinct, so no share overlaps
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.flip(0))
    torch.testing.assert_close(targets.sum(1), torch.ones(len(labels)))
    torch.testing.assert_close(targets[:, labels.flip(0)].diagonal(), torch.full((8,), 1 - lam))
    assert mixed.is_contiguous(memory_format=torch.channels_last)


def test_cutmix_pastes_one_box_whose_area_matches_the_target_share() -> None:
    images, labels = _batch()
    mixed, targets = BatchMix(cutmix=1.0)(images, labels, CLASSES, (0, 1, 2))
    from_partner = (mixed == images.flip(0)).all(1)  # (N, H, W): pixel taken from the partner
    own = (mixed == images).all(1)
    assert bool((from_partner | own).all())
    pasted = from_partner[0]
    rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
    assert int(pasted.sum()) == len(rows) * len(cols)  # one axis-aligned box
    assert bool((from_partner == pasted).all())  # the same box in every image
    kept = 1.0 - pasted.float().mean().item()
    torch.testing.assert_close(targets[:, labels].diagonal(), torch.full((8,), kept))
    torch.testing.assert_close(targets.sum(1), torch.ones(len(labels)))


def test_draws_are_keyed_and_both_kinds_are_used_when_both_are_on() -> None:
    images, labels = _batch()
    mix = BatchMix(mixup=0.2, cutmix=1.0)
    first = mix(images, labels, CLASSES, (0, 3, 5))
    torch.testing.assert_close(mix(images, labels, CLASSES, (0, 3, 5)), first)
    assert not torch.equal(mix(images, labels, CLASSES, (0, 3, 6))[0], first[0])
    kinds = set()
    for step in range(20):
        mixed, _ = mix(images, labels, CLASSES, (0, 1, step))
        kinds.add("cutmix" if bool(((mixed == images).all(1)).any()) else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_a_negative_seed_is_a_valid_key() -> None:
    images, labels = _batch()
    mix = BatchMix(mixup=0.2)
    mixed, targets = mix(images, labels, CLASSES, (-3, 1, 1))  # --seed -3 is allowed
    torch.testing.assert_close(targets.sum(1), torch.ones(len(labels)))
    assert not torch.equal(mixed, mix(images, labels, CLASSES, (3, 1, 1))[0])


def test_off_unless_an_alpha_is_positive() -> None:
    assert not BatchMix().enabled
    assert BatchMix(mixup=0.2).enabled and BatchMix(cutmix=1.0).enabled


def test_train_step_scores_soft_targets_by_their_largest_share() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # weights stay: logits are known
    images, _ = _batch()
    predicted = model(images).argmax(1)
    targets = torch.full((8, CLASSES), 0.0)
    targets[torch.arange(8), predicted] = 0.7  # the prediction is the larger share...
    targets[torch.arange(8), (predicted + 1) % CLASSES] = 0.3
    targets[:3] = targets[:3].roll(1, 1)  # ...except in the first 3 rows
    runtime = resolve_runtime("cpu", "fp32")
    result = train_step(model, images, targets, optimizer, runtime)
    assert int(result.correct) == 5
    logits = model(images)
    expected = -(targets * logits.log_softmax(1)).sum()
    assert result.loss_sum.item() == pytest.approx(expected.item(), rel=1e-5)
