"""BatchNorm over the global batch of a distributed run (--sync-bn).

On CUDA this is torch.nn.SyncBatchNorm. torch's SyncBatchNorm refuses CPU tensors, so a run on
CPUs (the gloo backend) uses GlooSyncBatchNorm: the same statistics, summed over the processes
with all_reduce, and differentiable through that sum, so that the gradients are those of one
BatchNorm over the whole global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """y = the sum of x over the processes. Each process's loss depends on y, so the gradient
    of the summed losses with respect to its x is the sum of the processes' gradients of y."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class GlooSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: each process's
    per-channel sums of x and x**2 and its value count, all_reduced. State dict as BatchNorm's,
    so checkpoints load into the plain network."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats or not dist.is_initialized():
            return super().forward(x)
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast a (C,) vector over (N, C, ...)
        dims = [0, *range(2, x.dim())]
        local_count = x.numel() // x.size(1)
        # float64 sums: the variance is E[x**2] - E[x]**2, which float32 would lose to
        # cancellation when a channel's mean is large against its spread
        stats = torch.cat(
            [
                x.sum(dims, dtype=torch.float64),
                (x * x).sum(dims, dtype=torch.float64),
                torch.tensor([local_count], dtype=torch.float64, device=x.device),
            ]
        )
        total = _AllReduceSum.apply(stats)
        channels = x.size(1)
        count = total[-1].detach()
        mean = total[:channels] / count
        var = (total[channels : 2 * channels] / count - mean * mean).clamp(min=0)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.item())
        scale = torch.rsqrt(var + self.eps).float()
        y = (x - mean.float().view(shape)) * scale.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """As BatchNorm: the running variance is the unbiased one; momentum None means a
        cumulative average."""
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:
            momentum = 1.0 / float(self.num_batches_tracked)
        unbiased = var * count / max(count - 1.0, 1.0)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module, cuda: bool) -> nn.Module:
    """`module` with every BatchNorm made a synchronised one (its parameters and buffers kept,
    the same objects): torch's SyncBatchNorm on CUDA, GlooSyncBatchNorm on the CPU."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    converted = module
    if isinstance(module, _BatchNorm):
        converted = GlooSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, cuda))
    return converted
