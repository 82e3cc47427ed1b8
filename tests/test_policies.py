"""Batched augmentation policies: determinism given the generator, grouped calls that match
per-image application, random erasing's rate, and one clear error for a setting they cannot
serve."""

from __future__ import annotations

import pytest
import torch

import cifarnet.data.policies as policies
from cifarnet.data.policies import (
    AutoAugment,
    RandAugment,
    RandomErasing,
    TrivialAugmentWide,
    generator_for,
    make_policy,
)
from cifarnet.errors import ConfigError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
POLICY_ARGS = [
    ("autoaugment", {}),
    ("randaugment", {"n": 2, "m": 9}),
    ("trivialaugment", {}),
    ("none", {"erasing": 0.5}),
]


def _images(n: int = 64, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(("name", "kwargs"), POLICY_ARGS)
def test_same_generator_state_same_output(name: str, kwargs: dict) -> None:
    policy, images = make_policy(name, **kwargs), _images()
    g = generator_for((7, 2, 31))
    state = g.get_state()
    first = policy(images, g)
    g.set_state(state)
    assert torch.equal(policy(images, g), first)
    assert torch.equal(policy(images, generator_for((7, 2, 31))), first)  # the key alone
    assert not torch.equal(policy(images, generator_for((7, 2, 32))), first)  # the next step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "kwargs"), POLICY_ARGS)
def test_policies_change_images_and_keep_dtype_shape_device(name, kwargs, device) -> None:
    images = _images().to(device)
    before = images.clone()
    out = make_policy(name, **kwargs)(images, generator_for((0,)))
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert torch.equal(images, before)  # the input is left alone
    changed = (out != images).flatten(1).any(1).float().mean().item()
    assert changed > 0.3, f"{name} changed only {changed:.0%} of the images"


def test_none_without_erasing_is_the_identity() -> None:
    images = _images(4)
    assert torch.equal(make_policy("none")(images, generator_for((0,))), images)


@pytest.mark.parametrize(
    "policy", [AutoAugment(), RandAugment(3, 14), TrivialAugmentWide()], ids=lambda p: p.name
)
def test_grouped_calls_equal_per_image_application(policy) -> None:
    images = _images(48)
    g = generator_for((1, 2, 3))
    stages = policy.draw(len(images), 32, 32, torch.Generator().set_state(g.get_state()))
    out = policy(images, g)
    expected = images.clone()
    for draws in stages:
        for i, drawn in enumerate(draws):
            if drawn is not None:
                op, magnitude = drawn
                expected[i : i + 1] = policies.OPERATIONS[op](expected[i : i + 1], magnitude)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    "policy", [AutoAugment(), RandAugment(2, 9), TrivialAugmentWide()], ids=lambda p: p.name
)
def test_one_call_per_distinct_operation_and_magnitude(policy, monkeypatch) -> None:
    calls: list[tuple[int, str, float, int]] = []  # stage, operation, magnitude, images
    stage = iter(range(100))
    current = [-1]
    apply_grouped = policies.apply_grouped

    def counting_stage(images, draws):
        current[0] = next(stage)
        apply_grouped(images, draws)

    def counting(op, fn):
        def wrapped(x, magnitude):
            calls.append((current[0], op, magnitude, len(x)))
            return fn(x, magnitude)

        return wrapped

    for op, fn in list(policies.OPERATIONS.items()):
        monkeypatch.setitem(policies.OPERATIONS, op, counting(op, fn))
    monkeypatch.setattr(policies, "apply_grouped", counting_stage)
    images = _images(128)
    g = generator_for((5,))
    stages = policy.draw(len(images), 32, 32, torch.Generator().set_state(g.get_state()))
    policy(images, g)
    keys = [(s, op, m) for s, op, m, _ in calls]
    assert len(keys) == len(set(keys))  # never two calls for one (stage, op, magnitude)
    for s, draws in enumerate(stages):
        drawn = [d for d in draws if d is not None and d[0] != "Identity"]
        assert len({k for k in keys if k[0] == s}) == len(set(drawn))
        assert sum(n for c, *_, n in calls if c == s) == len(drawn)  # each image once a stage
    assert len(calls) < len(images)  # grouping, not one call per image


def test_erasing_probability_and_box_sizes() -> None:
    images = torch.full((1000, 3, 16, 16), 128, dtype=torch.uint8)
    out = RandomErasing(0.3, image_size=16)(images, generator_for((11,)))
    erased = (out != images).any(1)  # (N, H, W): where the noise landed
    rate = erased.flatten(1).any(1).float().mean().item()
    assert rate == pytest.approx(0.3, abs=0.06)  # 4 standard deviations of 1,000 draws
    areas = erased.flatten(1).float().mean(1)
    areas = areas[areas > 0]
    # boxes cover 2-33% of the image, uniformly: a mean near 17.5%; their sides are rounded to
    # whole pixels (half a pixel either way, up to 7% of the area of a 16x16 image's box), and
    # noise that happens to equal 128 in all three channels leaves a pixel looking unerased
    assert areas.min() >= 0.01 and areas.max() <= 0.40
    assert areas.mean().item() == pytest.approx(0.175, abs=0.02)
    assert torch.equal(RandomErasing(0.0, 16)(images, generator_for((11,))), images)
    assert (RandomErasing(1.0, 16)(images, generator_for((11,))) != images).flatten(1).any(1).all()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: make_policy("randaugmnt"), "did you mean 'randaugment'"),
        (lambda: make_policy("autoaug"), "unknown augmentation policy 'autoaug'"),
        (lambda: make_policy("randaugment", n=0), "RandAugment N must be an integer from 1"),
        (lambda: make_policy("randaugment", m=31), "RandAugment M must be an integer from 0 to 30"),
        (lambda: make_policy("randaugment", m=4.5), "got 4.5"),
        (lambda: make_policy("none", erasing=1.5), r"probability must be in \[0, 1\], got 1.5"),
        (lambda: make_policy("none", erasing=-0.1), r"must be in \[0, 1\]"),
        (
            lambda: make_policy("trivialaugment", image_size=24),
            "'trivialaugment' needs images of at least 32x32 pixels, got 24x24",
        ),
        (lambda: make_policy("none", erasing=0.5, image_size=4), "at least 8x8 pixels"),
        (lambda: AutoAugment(image_size=2), "at least 3x3"),
    ],
)
def test_settings_it_cannot_serve_are_config_errors(build, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build()


def test_batches_it_cannot_serve_are_config_errors() -> None:
    policy = make_policy("randaugment")
    with pytest.raises(ConfigError, match=r"takes uint8 \(N, 3, H, W\) images, got torch.float32"):
        policy(torch.rand(2, 3, 32, 32), generator_for((0,)))
    with pytest.raises(ConfigError, match="at least 32x32 pixels, got 16x16"):
        make_policy("trivialaugment")(_images(2, size=16), generator_for((0,)))
