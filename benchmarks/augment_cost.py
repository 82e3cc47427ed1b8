"""Images per second of each batched augmentation policy on its own (no data loading, no model):
random uint8 images, the policy applied batch after batch with a generator keyed per step.

    python benchmarks/augment_cost.py [--batch 128] [--size 32] [--batches 40] [--device cpu]
                                      [--threads N] [--rounds 5]

Prints one line per policy: the median of `rounds` timings, each over `batches` batches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cifarnet.data.policies import generator_for, make_policy

SETTINGS = {
    "autoaugment": {"name": "autoaugment"},
    "randaugment n=2 m=9": {"name": "randaugment", "n": 2, "m": 9},
    "trivialaugment": {"name": "trivialaugment"},
    "erasing p=0.5": {"name": "none", "erasing": 0.5},
    "randaugment + erasing p=0.25": {"name": "randaugment", "erasing": 0.25},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    print(
        f"batch {args.batch}, {args.size}x{args.size}, {device}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; median of {args.rounds} rounds x {args.batches} "
        "batches"
    )
    for label, settings in SETTINGS.items():
        policy = make_policy(**settings, image_size=args.size)
        policy(images, generator_for((0,)))  # warm-up: first-call allocations and kernels
        rates = []
        for r in range(args.rounds):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for step in range(args.batches):
                policy(images, generator_for((0, r, step)))
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(args.batch * args.batches / (time.perf_counter() - t0))
        print(f"{label:30s} {statistics.median(rates):>10,.0f} images/s")


if __name__ == "__main__":
    main()
