"""Layers shared by the model families.

`Conv2d` is torch's, with one CPU-specific fix: under bf16 autocast, oneDNN's weight-gradient
kernels for strided convolutions and for convolutions of very few input channels (the RGB stem)
are several times slower than the fp32 ones (measured on an AVX512-BF16 CPU: 32->64 channels,
32x32, stride 2, batch 256: ~590 ms bf16 vs ~160 ms fp32). For those layers the weight gradient
is computed in fp32; the forward pass and the input gradient stay in bf16. The result is the
same convolution (only the rounding of the weight gradient differs, for the better), with the
same parameters and state-dict keys.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _BF16ConvFP32WeightGrad(torch.autograd.Function):
    """conv2d in bf16 whose weight gradient is computed in fp32 (x: (N, Cin, H, W))."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        x16, w16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x16, w16)
        ctx.conv, ctx.x_dtype = conv, x.dtype
        with torch.autocast("cpu", enabled=False):
            return F.conv2d(x16, w16, None, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, None]:
        x16, w16 = ctx.saved_tensors
        conv = ctx.conv
        args = (conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad.to(torch.bfloat16), x16, w16, None, *args, [True, False, False]
            )[0].to(ctx.x_dtype)
        grad_w = torch.ops.aten.convolution_backward(
            grad.float(), x16.float(), w16.float(), None, *args, [False, True, False]
        )[1]
        return grad_x, grad_w, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d with the bf16-CPU weight-gradient fix described in the module docstring."""

    def _needs_fp32_weight_grad(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and self.bias is None
            and self.padding_mode == "zeros"
            and self.weight.requires_grad
            and torch.is_grad_enabled()
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and (self.stride != (1, 1) or self.in_channels <= 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._needs_fp32_weight_grad(x):
            return _BF16ConvFP32WeightGrad.apply(x, self.weight, self)
        return super().forward(x)
