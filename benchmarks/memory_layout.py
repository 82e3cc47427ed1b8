"""Contiguous (NCHW) against channels_last (NHWC) tensors in fp32 on the CPU: training-step and
inference images/s of one model, the two layouts alternated pair by pair so that a slow spell of
a shared machine hits both alike.

    python benchmarks/memory_layout.py [--model resnet_reference] [--model-kwargs JSON]
                                       [--batch 256] [--seconds 8] [--pairs 3]

Each row is timed as `cifarnet benchmark` times its eager rows (its warm-up, then at least
`--seconds`): training is the run's training step with SGD on a random batch, inference the
model as evaluate and predict run it (BatchNorm folded, convolutions fused). One line per pair
and mode: both images/s and their ratio.
"""

from __future__ import annotations

import argparse
import json

import torch

from cifarnet.runtime.device import Runtime
from cifarnet.tasks.benchmarking import _time_torch, fresh_network
from cifarnet.tasks.inference import NormalizedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet_reference")
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="JSON object")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=8.0, help="least timed seconds per row")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    net, info = fresh_network(args.model, args.model_kwargs)
    base = NormalizedModel(net, info.mean, info.std)

    def rate(mode: str, channels_last: bool) -> float:
        runtime = Runtime(torch.device("cpu"), "fp32", channels_last)
        row = _time_torch(base, runtime, mode, args.batch, args.seconds, False, info)
        return row.images_per_second

    for mode in ("train", "inference"):
        for pair in range(args.pairs):
            contiguous, channels_last = rate(mode, False), rate(mode, True)
            print(
                f"{args.model} {mode} batch {args.batch} pair {pair}: contiguous "
                f"{contiguous:.1f}  channels_last {channels_last:.1f} images/s  "
                f"ratio {channels_last / contiguous:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
