"""What the batched augmentation policies cost: each policy's own images/s, and, with
`--train`, the training images/s of a model with and without each policy (and with SAM) through
the pipeline a run uses.

    python benchmarks/augment_cost.py [--data-dir DIR] [--batch 128] [--size 32] [--batches 40]
                                      [--rounds 5] [--device cpu] [--threads N]
                                      [--train] [--model resnet20] [--steps 20]

Policies alone: random uint8 images, or with `--data-dir` the first training images of
CIFAR-100 (after crop and flip), the policy applied batch after batch with a generator keyed per
step; one line per policy, the median of `rounds` timings over `batches` batches each.

With `--train` (needs `--data-dir`): the training batches of a run (crop and flip, the policy,
normalisation) and its training step (`train_step` at the device's automatic precision and
memory format; SGD as the default recipe builds it) on `--model`, `steps` steps per variant and
round, the variants alternated round after round so that a slow spell of a shared machine hits
them alike; a variant's first step is a warm-up, not timed. One line per variant: the median
images/s, milliseconds a step, and the share of the step's time the variant adds over `none`.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch

from cifarnet.config.settings import TrainConfig
from cifarnet.data.augment import Augment, Normalize
from cifarnet.data.datasets import load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.data.policies import SeededPolicy, generator_for, make_policy
from cifarnet.models import create_model
from cifarnet.runtime.device import resolve_runtime
from cifarnet.training.optim import build_optimizer
from cifarnet.training.sam import SAM
from cifarnet.training.step import train_step

# label: make_policy's arguments (None: no policy)
SETTINGS: dict[str, dict | None] = {
    "none": None,
    "autoaugment": {"name": "autoaugment"},
    "randaugment n=2 m=9": {"name": "randaugment", "n": 2, "m": 9},
    "trivialaugment": {"name": "trivialaugment"},
    "erasing p=0.25": {"name": "none", "erasing": 0.25},
    "trivialaugment + erasing 0.25": {"name": "trivialaugment", "erasing": 0.25},
}
SAM_RHO = 0.05  # the extra training variant "sam 0.05", without a policy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def policies_alone(args: argparse.Namespace, images: torch.Tensor) -> None:
    """Each policy's own images/s on `images` (uint8 (N, 3, size, size) on the device)."""
    device = images.device
    for label, settings in SETTINGS.items():
        if settings is None:
            continue
        policy = make_policy(**settings, image_size=args.size)
        policy(images, generator_for((0,)))  # warm-up: first-call allocations and kernels
        rates = []
        for r in range(args.rounds):
            _sync(device)
            t0 = time.perf_counter()
            for step in range(args.batches):
                policy(images, generator_for((0, r, step)))
            _sync(device)
            rates.append(args.batch * args.batches / (time.perf_counter() - t0))
        print(f"policy alone  {label:32s} {statistics.median(rates):>10,.0f} images/s", flush=True)


def _training_variant(
    args: argparse.Namespace, data, settings: dict | None, sam: bool
) -> Callable[[int], float]:
    """A function that runs `steps` training steps of this variant in round r and returns
    their seconds (the device synchronised before and after)."""
    runtime = resolve_runtime(args.device, "auto")
    dev = runtime.device
    torch.manual_seed(0)
    model = create_model(args.model, 100).to(dev, memory_format=runtime.memory_format())
    config = TrainConfig(model=args.model, batch_size=args.batch)
    optimizer = build_optimizer(model, config)
    stepper = SAM(optimizer, SAM_RHO) if sam else optimizer
    policy = None if settings is None else SeededPolicy(make_policy(**settings), 0)
    normalize = Normalize(data.spec.mean, data.spec.std, dev, runtime.channels_last)
    images = data.train_images[: args.batch * args.steps].to(dev)
    labels = data.train_labels[: len(images)].to(dev)
    loader = BatchLoader(
        images, labels, args.batch, normalize, Augment(), shuffle=True, policy=policy
    )
    model.train()

    def run(r: int, warm_up: bool = False) -> float:
        generator = torch.Generator(device=dev).manual_seed(r)
        batches = loader.batches(generator, epoch=r + 1)
        if warm_up:
            x, y = next(batches)
            train_step(model, x, y, stepper, runtime, config.label_smoothing)
            return 0.0
        _sync(dev)
        t0 = time.perf_counter()
        for x, y in itertools.islice(batches, args.steps):
            train_step(model, x, y, stepper, runtime, config.label_smoothing)
        _sync(dev)
        return time.perf_counter() - t0

    run(0, warm_up=True)
    return run


def training(args: argparse.Namespace, data) -> None:
    """Training images/s of each variant, alternated round by round."""
    variants = {label: (settings, False) for label, settings in SETTINGS.items()}
    variants[f"sam {SAM_RHO}"] = (None, True)
    runs = {label: _training_variant(args, data, *v) for label, v in variants.items()}
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for r in range(args.rounds):
        for label, run in runs.items():
            seconds[label].append(run(r))
    base = statistics.median(seconds["none"])
    runtime = resolve_runtime(args.device, "auto")
    print(
        f"training {args.model}, batch {args.batch}, {runtime.device} {runtime.precision}"
        f"{' channels_last' if runtime.channels_last else ''}; median of {args.rounds} rounds x "
        f"{args.steps} steps",
        flush=True,
    )
    for label, times in seconds.items():
        median = statistics.median(times)
        share = (median - base) / median
        print(
            f"training  {label:32s} {args.batch * args.steps / median:>8,.0f} images/s "
            f"{1000 * median / args.steps:>8.1f} ms/step  adds {100 * share:5.1f}% of the step"
            f"  (rounds: {', '.join(f'{args.batch * args.steps / t:,.0f}' for t in times)})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding CIFAR-100")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--train", action="store_true", help="training images/s per variant")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps a round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train and args.data_dir is None:
        parser.error("--train needs --data-dir")
    device = torch.device(args.device)
    data = load_dataset("cifar100", args.data_dir, download=False) if args.data_dir else None
    if data is not None and args.size == 32:
        g = torch.Generator().manual_seed(0)
        images = Augment()(data.train_images[: args.batch], g).to(device)
    else:
        g = torch.Generator().manual_seed(0)
        shape = (args.batch, 3, args.size, args.size)
        images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    print(
        f"batch {args.batch}, {args.size}x{args.size}, {device}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, "
        f"{'CIFAR-100 training images' if data is not None else 'random images'}; policies "
        f"alone: median of {args.rounds} rounds x {args.batches} batches",
        flush=True,
    )
    policies_alone(args, images)
    if args.train:
        training(args, data)


if __name__ == "__main__":
    main()
