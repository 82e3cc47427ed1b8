"""The bf16-CPU convolution fix must compute the same convolution and gradients."""

from __future__ import annotations

import pytest
import torch

from cifarnet.models.layers import Conv2d


@pytest.mark.parametrize(("cin", "cout", "stride"), [(3, 8, 1), (8, 16, 2)])
def test_fp32_weight_grad_conv_matches_plain_conv(cin: int, cout: int, stride: int) -> None:
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    fixed = Conv2d(cin, cout, 3, stride, 1, bias=False)
    fixed.load_state_dict(plain.state_dict())
    x = torch.randn(4, cin, 12, 12)
    results = []
    for conv in (plain, fixed):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        results.append((y.float(), conv.weight.grad, xi.grad))
    assert fixed._needs_fp32_weight_grad(x.requires_grad_(True)) is False  # no autocast here
    (y0, gw0, gx0), (y1, gw1, gx1) = results
    torch.testing.assert_close(y1, y0)  # same bf16 forward
    torch.testing.assert_close(gx1, gx0, rtol=2e-2, atol=2e-2)
    # fp32 weight gradient: close to the bf16 one, and closer to the exact fp32 gradient
    torch.testing.assert_close(gw1, gw0, rtol=3e-2, atol=3e-2)
    xe = x.detach().clone()
    exact = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    exact.load_state_dict(plain.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16 = fixed(xe)  # the upstream gradient 2*y must be the same for both comparisons
    exact(xe).backward(2 * y16.float())
    assert (gw1 - exact.weight.grad).norm() <= (gw0 - exact.weight.grad).norm() * 1.01


def test_plain_path_outside_autocast() -> None:
    conv = Conv2d(3, 4, 3, 2, 1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, None, 2, 1))
