"""torch.compile with fixed shapes, compiled before the timed loop.

A compiled module recompiles at every new input shape and mode, and after the first recompile
torch falls back to slow "dynamic" graphs. So a compiled run shows the compiled forms only the
shapes it will use: full training batches (the partial last batch of an epoch is dropped, see
`BatchLoader(drop_last=...)`), one per progressive-resizing side, and evaluation batches padded
to the evaluation batch size. `warm_up` compiles each of them once on zero batches, outside the
timed loop, leaving weights, buffers and random states as they were; its seconds are the run's
`compile_seconds`, apart from its training time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from cifarnet.config.settings import TrainConfig
from cifarnet.data.augment import training_resolution
from cifarnet.runtime.device import Runtime, out_of_memory_as
from cifarnet.training.callbacks import TrainCallbacks

if TYPE_CHECKING:
    from cifarnet.training.setup import Optimisation


def uses_compile(config: TrainConfig, runtime: Runtime) -> bool:
    """--compile, or by default on CUDA."""
    return config.compile if config.compile is not None else runtime.device.type == "cuda"


def compile_model(model: nn.Module) -> nn.Module:
    """`model` compiled for fixed shapes (no dynamic-shape graphs)."""
    return torch.compile(model, dynamic=False)


def training_sides(resize_from: int, full: int = 32) -> list[int]:
    """Every side length (px) progressive resizing from `resize_from` trains at, ascending."""
    return sorted({training_resolution(resize_from, i / 1000, full) for i in range(1001)})


def pad_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """`images` (n, C, H, W) with zero images appended up to `size`, in the same memory format,
    so that a compiled module sees one batch shape (the caller keeps the first n outputs)."""
    n = len(images)
    if n >= size:
        return images
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    padding = images.new_zeros((size - n, *images.shape[1:]))
    return torch.cat([images, padding]).contiguous(memory_format=layout)


def compile_shapes(
    model: nn.Module,
    optim: Optimisation,
    runtime: Runtime,
    config: TrainConfig,
    callbacks: TrainCallbacks,
) -> float:
    """A compiled run's warm-up, told to `callbacks` and with out of memory in one line; returns
    its seconds."""
    callbacks.on_status("compiling")
    with out_of_memory_as(
        f"out of memory on {runtime.device} at batch size {config.batch_size}; "
        "try a smaller --batch-size"
    ):
        return warm_up(model, optim.forward_model, optim.eval_forward, runtime, config)


@contextmanager
def _state_kept(model: nn.Module) -> Iterator[None]:
    """Restore `model`'s buffers (BatchNorm statistics), drop its gradients and restore torch's
    random states after the block."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.zero_grad(set_to_none=True)
        torch.set_rng_state(cpu_rng)
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)


def warm_up(
    model: nn.Module,
    forward_model: nn.Module,
    eval_forward: nn.Module,
    runtime: Runtime,
    config: TrainConfig,
) -> float:
    """Compile every shape and mode the run uses: a forward and backward pass of `forward_model`
    at each training side, and `eval_forward`'s evaluation pass. `model` (whose parameters
    `forward_model` trains) is left as it was. Returns the seconds it took."""
    t0 = time.perf_counter()
    dev, layout = runtime.device, runtime.memory_format()
    was_training = forward_model.training
    with _state_kept(model):
        forward_model.train()
        for side in training_sides(config.resize_from):
            x = torch.zeros(config.batch_size, 3, side, side, device=dev)
            with runtime.autocast():
                out = forward_model(x.contiguous(memory_format=layout))
            out.float().sum().backward()
        eval_forward.eval()
        x = torch.zeros(config.eval_batch_size, 3, 32, 32, device=dev)
        with torch.no_grad(), runtime.autocast():
            eval_forward(x.contiguous(memory_format=layout))
        eval_forward.train(was_training)
        forward_model.train(was_training)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0
