"""The runtime a run resolves: its memory format per device and precision, and the global
settings seeding leaves behind."""

from __future__ import annotations

import pytest
import torch

from cifarnet.runtime.device import prefers_channels_last, resolve_runtime, seed_everything


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_runs_are_channels_last_in_every_precision(precision: str) -> None:
    runtime = resolve_runtime("cpu", precision)
    assert runtime.channels_last
    assert runtime.memory_format() == torch.channels_last


@pytest.mark.parametrize(("device", "expected"), [("cuda", True), ("cpu", True), ("mps", False)])
def test_channels_last_per_device_type(device: str, expected: bool) -> None:
    assert prefers_channels_last(torch.device(device)) is expected


def test_a_run_after_a_deterministic_one_is_not_left_deterministic() -> None:
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
