"""Progressive resizing: the resolution schedule and a run that uses it."""

from __future__ import annotations

import torch

from cifarnet.data.augment import resize_batch, training_resolution


def test_resolution_grows_in_4px_steps_to_full_size() -> None:
    sizes = [training_resolution(16, p / 100) for p in range(101)]
    assert sizes[0] == 16
    assert sizes == sorted(sizes)
    assert all(s % 4 == 0 for s in sizes)
    assert set(sizes) == {16, 20, 24, 28, 32}
    assert training_resolution(16, 0.75) == 32
    assert training_resolution(16, 0.70) < 32
    assert training_resolution(32, 0.0) == 32


def test_resize_batch_keeps_layout_and_skips_full_size() -> None:
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert resize_batch(x, 32) is x
    small = resize_batch(x, 20)
    assert small.shape == (2, 3, 20, 20)
    assert small.is_contiguous(memory_format=torch.channels_last)
    # antialiased bilinear keeps the mean of a smooth image
    assert abs(small.mean().item() - x.mean().item()) < 0.02


def test_training_with_progressive_resizing(tiny_config, monkeypatch) -> None:
    from cifarnet.training import trainer

    sides = []  # the side (px) of each training batch after resizing

    def recording(x: torch.Tensor, size: int) -> torch.Tensor:
        out = resize_batch(x, size)
        sides.append(out.shape[-1])
        return out

    monkeypatch.setattr(trainer, "resize_batch", recording)
    summary = trainer.train(tiny_config.replace(resize_from=16, epochs=2))
    assert summary["epochs"] == 2
    # every batch of the run, starting at 16 px and growing in 4-px steps to the full 32 px
    assert len(sides) == 2 * 5  # 300 training images in batches of 64, per epoch
    assert sides[0] == 16 and sides[-1] == 32
    assert sides == sorted(sides) and set(sides) <= {16, 20, 24, 28, 32}
