"""Model cost: multiply-accumulates per image, as torch's FLOP counter sees them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, image_size: int = 32) -> int:
    """Multiply-accumulates of one forward pass on one (3, image_size, image_size) image.

    Counts what torch's FlopCounterMode counts (convolutions, matrix products, attention), at
    2 FLOPs per multiply-accumulate; BatchNorm, activations and pooling are not included. Works
    on a model on any device, the meta device too (no memory, no arithmetic). The model is run
    in eval mode, so BatchNorm statistics stay as they were.
    """
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model.eval()(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
