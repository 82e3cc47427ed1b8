"""cifarnet.tasks.fusion: convolutions fused with their ReLU or residual add (CPU inference)."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from conftest import trained_looking
from torch import nn

from cifarnet.models import create_model
from cifarnet.runtime.device import cpu_has_native_bf16, resolve_runtime
from cifarnet.tasks import fusion
from cifarnet.tasks.fusion import FusedConv2d, FusedConv2dAdd, fuse_convolutions
from cifarnet.tasks.inference import NormalizedModel, fold_batchnorm, prepare_for_inference

pytestmark = pytest.mark.skipif(
    not fusion.onednn_fusion_available(), reason="this PyTorch build has no oneDNN fused ops"
)
# oneDNN has no bf16 convolutions on AVX2-only CPUs, where fusion in bf16 falls back to the
# unfused model (test_a_fused_copy_that_fails_in_bf16_is_not_used); the bf16 fusion itself is
# tested where cifarnet runs bf16 by default (cpu_has_native_bf16: AVX512-BF16 or AMX)
needs_bf16 = pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="this CPU has no bf16 convolution kernels"
)


def folded(name: str, **model_kwargs) -> nn.Module:
    """`trained_looking(name, **model_kwargs)` with its BatchNorms folded, as fusion gets it."""
    return fold_batchnorm(trained_looking(name, **model_kwargs))


def counts(model: nn.Module) -> tuple[int, int]:
    """(fused convolutions, of which fused with an addition)."""
    fused = [m for m in model.modules() if isinstance(m, FusedConv2d)]
    return len(fused), sum(isinstance(m, FusedConv2dAdd) for m in fused)


# resnet_reference: 28 convolutions, 12 residual additions (no ReLU after them); resnet18: 20
# convolutions (with 1x1 shortcuts), 8 additions each followed by a ReLU; fastnet: 7 convolutions,
# only the 3 second convolutions of its stages followed directly by their GELU; fastnet with
# residual stages: 10 convolutions, its 3 additions followed by a GELU (not fused)
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("resnet_reference", {}, (28, 12)),
        ("resnet18", {}, (20, 8)),
        ("fastnet", {}, (7, 0)),
        ("fastnet", {"widths": [16, 32, 32], "convs_per_stage": 3}, (10, 0)),
    ],
)
def test_fused_network_computes_the_same_function_in_fp32(name, kwargs, expected):
    model = folded(name, **kwargs)
    x = torch.rand(4, 3, 32, 32)
    fused = fuse_convolutions(model, torch.float32, torch.rand(2, 3, 32, 32))
    assert counts(fused) == expected
    with torch.no_grad():
        want, got = model(x), fused(x)
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max().item())


@needs_bf16
def test_fused_bf16_network_stays_within_bf16_rounding_of_the_unfused_one():
    model = folded("resnet_reference")
    fused = fuse_convolutions(model, torch.bfloat16, torch.rand(2, 3, 32, 32))
    x = torch.rand(64, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            unfused_bf16 = model(x).float()
            got = fused(x).float()
    convs = [m for m in fused.modules() if isinstance(m, FusedConv2d)]
    assert {p.dtype for m in convs for p in m.parameters()} == {torch.bfloat16}
    # the fused graph rounds to bf16 once per block instead of twice: no farther from fp32
    assert (got - want).abs().max() <= 1.5 * (unfused_bf16 - want).abs().max()


class ResidualReadLater(nn.Module):
    """conv(x) + r, then r read again: the addition must not overwrite r."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.first(x)
        y = self.second(r) + r
        return y * r


class ResidualIsTheInput(nn.Module):
    """conv(x) + x: x is the caller's tensor and must come back unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


@pytest.mark.parametrize("module", [ResidualReadLater, ResidualIsTheInput])
def test_residual_that_is_still_needed_is_not_overwritten(module):
    torch.manual_seed(0)
    model = torch.fx.symbolic_trace(module().eval())
    fused = fuse_convolutions(model, torch.float32, torch.rand(2, 3, 8, 8))
    fused_convs, with_addition = counts(fused)
    assert fused_convs > 0 and with_addition == 0
    x = torch.rand(2, 3, 8, 8)
    kept = x.clone()
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
    assert torch.equal(x, kept)


def test_a_fused_copy_that_disagrees_is_not_used(monkeypatch):
    model = folded("resnet_reference")
    real = FusedConv2d.forward
    monkeypatch.setattr(FusedConv2d, "forward", lambda self, x: real(self, x) + 1.0)
    assert fuse_convolutions(model, torch.float32, torch.rand(2, 3, 32, 32)) is model


def test_a_fused_copy_that_fails_in_bf16_is_not_used(monkeypatch):
    model = folded("resnet_reference")
    real = FusedConv2d.forward

    def fp32_only(self, x):
        if self.weight.dtype != torch.float32:
            raise RuntimeError("no bf16 kernel")
        return real(self, x)

    monkeypatch.setattr(FusedConv2d, "forward", fp32_only)
    assert fuse_convolutions(model, torch.bfloat16, torch.rand(2, 3, 32, 32)) is model
    assert counts(fuse_convolutions(model, torch.float32, torch.rand(2, 3, 32, 32))) == (28, 12)


def test_no_fusion_without_onednn(monkeypatch):
    model = folded("resnet_reference")
    monkeypatch.setattr(fusion, "onednn_fusion_available", lambda: False)
    assert fuse_convolutions(model, torch.float32, torch.rand(2, 3, 32, 32)) is model


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
def test_inference_model_on_cpu_is_fused_unless_asked_not_to(precision):
    torch.manual_seed(0)
    model = NormalizedModel(create_model("resnet_reference", 10), [0.5] * 3, [0.25] * 3)
    runtime = resolve_runtime("cpu", precision)  # channels_last, as evaluate and predict run
    prepared = prepare_for_inference(model, runtime, 32)
    assert counts(prepared) == (28, 12)
    assert counts(prepare_for_inference(model, runtime, 32, fuse=False)) == (0, 0)
