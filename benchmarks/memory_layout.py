"""Contiguous (NCHW) against channels_last (NHWC) tensors in fp32 on the CPU: training-step and
inference images/s of one model, the two layouts alternated pair by pair so that a slow spell of
a shared machine hits both alike.

    python benchmarks/memory_layout.py [--model resnet_reference] [--model-kwargs JSON]
                                       [--batch 256] [--seconds 8] [--pairs 3]

Training: forward, cross-entropy and backward on a random batch, then an SGD step (momentum
0.9), the model and the batch in the layout; one untimed step first. Inference: the model as
evaluate and predict run it (`prepare_for_inference`: BatchNorm folded, convolutions fused) under
inference_mode, for half the seconds. One line per pair and mode: both images/s and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from cifarnet.models import create_model
from cifarnet.runtime.device import Runtime
from cifarnet.tasks.inference import prepare_for_inference

CLASSES = 100


def _layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def _rate(step: Callable[[], None], batch: int, seconds: float) -> float:
    """Images/s of `step` (one batch each), timed for at least `seconds` after one warm-up."""
    step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


def training_rate(args: argparse.Namespace, images: torch.Tensor, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = create_model(args.model, CLASSES, **args.model_kwargs)
    model = model.to(memory_format=_layout(channels_last)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = images.contiguous(memory_format=_layout(channels_last))  # (batch, 3, 32, 32)
    labels = torch.arange(len(images)) % CLASSES

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()

    return _rate(step, len(images), args.seconds)


def inference_rate(args: argparse.Namespace, images: torch.Tensor, channels_last: bool) -> float:
    torch.manual_seed(0)
    runtime = Runtime(torch.device("cpu"), "fp32", channels_last)
    network = create_model(args.model, CLASSES, **args.model_kwargs)
    model = prepare_for_inference(network, runtime, image_size=32)
    x = images.contiguous(memory_format=runtime.memory_format())

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return _rate(step, len(images), args.seconds / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet_reference")
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON object")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per training row")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    images = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for mode, rate in (("train", training_rate), ("inference", inference_rate)):
        for pair in range(args.pairs):
            contiguous = rate(args, images, False)
            channels_last = rate(args, images, True)
            print(
                f"{args.model} {mode} batch {args.batch} pair {pair}: contiguous "
                f"{contiguous:.1f}  channels_last {channels_last:.1f} images/s  "
                f"ratio {channels_last / contiguous:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
