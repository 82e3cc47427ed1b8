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


def model_size(name: str, num_classes: int, image_size: int = 32) -> tuple[int, int]:
    """(parameters, multiply-accumulates per image) of the registered model `name`, built on the
    meta device: no memory is allocated and no weight initialised, so even the 40 M-parameter
    networks cost milliseconds."""
    from cifarnet.models import count_parameters, create_model

    with torch.device("meta"):
        model = create_model(name, num_classes)
    return count_parameters(model), count_macs(model, image_size)
