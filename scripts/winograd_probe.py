"""Would Winograd convolutions make `cifarnet evaluate` faster on this CPU? A probe, per layer
shape of the reference network: oneDNN's direct bf16 convolution (what evaluate runs) against
Winograd F(2x2, 3x3) (4x4 input tiles, stride 2, 16 products per 4 outputs instead of 36), with
the tile transforms compiled by torch.compile (inductor) and the 16 GEMMs as one bf16 `bmm`.

Prints, per shape, the milliseconds of each part and the max |error| of each variant relative to
the fp32 direct convolution. Kept output: docs/results/speed/session7/winograd_probe.txt.

  python scripts/winograd_probe.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

# (channels, side length in px, batch): the four stages of resnet_reference, then two batch sizes
SHAPES = [(32, 32, 64), (64, 16, 64), (128, 8, 64), (256, 4, 64), (32, 32, 32), (64, 16, 128)]
G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def milliseconds(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Mean wall time of fn(*args, **kwargs) over 20 calls, after 3 warm-up calls."""
    for _ in range(3):
        fn(*args, **kwargs)
    start = time.perf_counter()
    for _ in range(20):
        fn(*args, **kwargs)
    return (time.perf_counter() - start) / 20 * 1e3


def weight_transform(w: torch.Tensor) -> torch.Tensor:
    """w (K, C, 3, 3) -> U (16, C, K) = G w G^T per (K, C), tile positions first."""
    u = G @ w @ G.T
    return u.permute(2, 3, 1, 0).reshape(16, w.shape[1], w.shape[0])


def _bt(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """B^T of F(2, 3) along one axis: 4 input taps -> 4 transformed taps (adds only)."""
    d0, d1, d2, d3 = rows
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def input_transform(x: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) channels_last -> V (16, N * H/2 * W/2, C), channels innermost."""
    n, c, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (N, H+2, W+2, C)
    tiles = []
    for row in _bt([padded[:, i : i + h : 2] for i in range(4)]):  # (N, H/2, W+2, C)
        tiles += _bt([row[:, :, j : j + w : 2] for j in range(4)])  # (N, H/2, W/2, C)
    return torch.stack(tiles).reshape(16, n * (h // 2) * (w // 2), c)


def output_transform(m: torch.Tensor, n: int, h: int, w: int, bias: torch.Tensor) -> torch.Tensor:
    """M (16, N * H/2 * W/2, K) -> y (N, K, H, W) channels_last, A^T M A + bias."""
    k = m.shape[-1]
    m = m.view(4, 4, n, h // 2, w // 2, k)

    def at(t: torch.Tensor, dim: int) -> torch.Tensor:
        s0, s1, s2, s3 = t.unbind(dim)
        return torch.stack([s0 + s1 + s2, s1 - s2 - s3], dim)

    y = at(at(m, 0), 1)  # (2, 2, N, H/2, W/2, K)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, h, w, k) + bias
    return y.permute(0, 3, 1, 2)


def main() -> None:
    torch.manual_seed(0)
    compiled_in = torch.compile(input_transform, dynamic=False)
    compiled_out = torch.compile(output_transform, dynamic=False)

    def winograd(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return compiled_out(torch.bmm(compiled_in(x), u), n, h, w, bias)

    with torch.no_grad():
        for c, side, n in SHAPES:
            x = torch.randn(n, c, side, side).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(c, c, 3, 3) * 0.05, torch.randn(c)
            exact = F.conv2d(x, w, b, padding=1)
            u = weight_transform(w)
            xb, wb, bb, ub = x.bfloat16(), w.bfloat16(), b.bfloat16(), u.bfloat16()
            v = compiled_in(xb)
            m = torch.bmm(v, ub)
            times = {
                "direct": milliseconds(F.conv2d, xb, wb, bb, padding=1),
                "winograd": milliseconds(winograd, xb, ub, bb),
                "in": milliseconds(compiled_in, xb),
                "bmm": milliseconds(torch.bmm, v, ub),
                "out": milliseconds(compiled_out, m, n, side, side, bb),
            }
            outputs = (
                output_transform(torch.bmm(input_transform(x), u), n, side, side, b),
                F.conv2d(xb, wb, bb, padding=1),
                winograd(xb, ub, bb),
            )
            errors = [((y.float() - exact).abs().max() / exact.abs().max()).item() for y in outputs]
            print(
                f"C={c} H={side} N={n}: direct bf16 {times['direct']:.2f} ms, "
                f"winograd bf16 {times['winograd']:.2f} ms (input transform {times['in']:.2f}, "
                f"bmm {times['bmm']:.2f}, output transform {times['out']:.2f}); max |error| "
                f"fp32 winograd {errors[0]:.1e}, bf16 direct {errors[1]:.1e}, "
                f"bf16 winograd {errors[2]:.1e}"
            )


if __name__ == "__main__":
    main()
