"""A run's set-up before its first step: the data as device-resident batch loaders (with the
augmentation policy), and the model with its optimizer (SAM's wrapper with --sam), plateau
schedule, loss scaler, weight average (EMA), lookahead's slow weights and compiled forms."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cifarnet.config.checks import IMAGE_SIZE
from cifarnet.config.settings import TrainConfig
from cifarnet.data.augment import Augment, Normalize
from cifarnet.data.datasets import load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.data.mixing import BatchMix
from cifarnet.data.splits import train_val_indices
from cifarnet.runtime.device import Runtime, seed_everything, tune_backends
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.compiling import compile_model, uses_compile
from cifarnet.training.ema import Ema
from cifarnet.training.lookahead import Lookahead
from cifarnet.training.optim import build_optimizer, build_plateau
from cifarnet.training.sam import SAM

if TYPE_CHECKING:
    from cifarnet.data.policies import SeededPolicy


@dataclass
class TrainData:
    """The run's data on its device, and what checkpoints and config.json record of it."""

    train_loader: BatchLoader  # shuffled and augmented
    val_loader: BatchLoader | None  # None with --val-size 0
    test_loader: BatchLoader
    normalize: Normalize
    mix: BatchMix
    info: dict[str, Any]  # checkpoints' "data" entry
    source: str  # the absolute folder the data was read from
    train_count: int
    val_count: int
    test_count: int  # the whole test set's, when each process holds a part of it


def _shard(
    images: torch.Tensor, labels: torch.Tensor, share: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's contiguous part of an evaluation set: `share` is (rank, processes)."""
    rank, processes = share
    return images.tensor_split(processes)[rank], labels.tensor_split(processes)[rank]


def prepare_data(
    config: TrainConfig,
    runtime: Runtime,
    callbacks: TrainCallbacks,
    share: tuple[int, int] = (0, 1),
) -> TrainData:
    """Load the dataset, split off validation (and take the subset), and move the images to
    the device once as uint8; batches are cut, augmented and normalised there. `share`
    (rank, processes) of a distributed run: each process trains on its slice of every global
    batch (full batches only, so that the slices are equal) and evaluates its part of the
    validation and test sets."""
    c, dev = config, runtime.device
    policy = training_policy(c)  # before the data: a setting it cannot serve fails first
    callbacks.on_status(f"loading {c.dataset}")
    data = load_dataset(c.dataset, c.data_dir, download=c.download)
    # where the data was found (--data-dir, $CIFARNET_DATA or the cache), stored absolute so
    # that `evaluate` of this run's checkpoints finds it again from anywhere
    source = os.path.abspath(data.source)
    train_idx, val_idx = train_val_indices(
        data.train_labels, c.val_size, c.seed, c.subset, c.dataset
    )
    normalize = Normalize(data.spec.mean, data.spec.std, dev, runtime.channels_last)
    train_loader = BatchLoader(
        data.train_images[train_idx].to(dev),
        data.train_labels[train_idx].to(dev),
        c.batch_size,
        normalize,
        Augment(c.crop_padding, c.flip, c.cutout),
        shuffle=True,
        # compiled: full batches only, one shape (compiling.py)
        drop_last=uses_compile(c, runtime) or share[1] > 1,
        policy=policy,
        share=share,
    )
    val_images, val_labels = _shard(data.train_images[val_idx], data.train_labels[val_idx], share)
    val_loader = (
        BatchLoader(val_images.to(dev), val_labels.to(dev), c.eval_batch_size, normalize)
        if len(val_idx)
        else None
    )
    test_images, test_labels = _shard(data.test_images, data.test_labels, share)
    test_loader = BatchLoader(
        test_images.to(dev), test_labels.to(dev), c.eval_batch_size, normalize
    )
    return TrainData(
        train_loader,
        val_loader,
        test_loader,
        normalize,
        BatchMix(c.mixup, c.cutmix),
        {**data.info(), "source": source},
        source,
        len(train_idx),
        len(val_idx),
        len(data.test_labels),
    )


def training_policy(config: TrainConfig) -> SeededPolicy | None:
    """--augment and --random-erasing as one batch policy on the 32x32 training images (before
    progressive resizing), or None when both are off."""
    if config.augment == "none" and config.random_erasing == 0:
        return None
    from cifarnet.data.policies import SeededPolicy, make_policy

    policy = make_policy(
        config.augment,
        n=config.randaugment_n,
        m=config.randaugment_m,
        erasing=config.random_erasing,
        image_size=IMAGE_SIZE,
    )
    return SeededPolicy(policy, config.seed)


@dataclass
class Optimisation:
    """What trains the model, and the forms of it that run forward."""

    optimizer: torch.optim.Optimizer  # the base optimizer: its state is what checkpoints keep
    sam: SAM | None  # --sam only: wraps `optimizer`, two passes a step
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None  # --schedule plateau only
    scaler: torch.amp.GradScaler | None  # fp16 only
    ema: Ema | None  # --ema only
    lookahead: Lookahead | None  # --lookahead only
    compiled: bool
    forward_model: nn.Module  # the training forward pass (torch.compile'd when compiled)
    eval_model: nn.Module  # the weights validated and saved in best.pt: the EMA's, or the model
    eval_forward: nn.Module  # eval_model's forward pass (compiled when compiled)

    @property
    def stepper(self) -> torch.optim.Optimizer | SAM:
        """What a training step steps: SAM with --sam, else the optimizer."""
        return self.sam if self.sam is not None else self.optimizer


def prepare_model(
    model: nn.Module,
    config: TrainConfig,
    runtime: Runtime,
    data: TrainData,
    fresh: bool,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Optimisation:
    """Move `model` to the device (a `fresh` one, not resumed, first initialises its whitening
    from the training images) and build what trains it. `wrap`: the training forward pass
    around `model` (a distributed run's DistributedDataParallel), compiled when compiling."""
    c, rt = config, runtime
    # again: training's own draws (dropout, the whitening sample) then start from the seed,
    # however many the set-up since the model's initialisation made
    seed_everything(c.seed, c.deterministic)
    if fresh and hasattr(model, "init_whitening"):
        images = data.train_loader.images
        sample = images[: min(5000, len(images))]  # uint8 (n, 3, 32, 32)
        model.init_whitening(data.normalize(sample))
    model.to(rt.device, memory_format=rt.memory_format())
    tune_backends(rt, c.deterministic)
    optimizer = build_optimizer(model, c)
    sam = SAM(optimizer, c.sam, c.sam_adaptive) if c.sam is not None else None
    plateau = build_plateau(optimizer, c)
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    ema = Ema(model, c.ema_decay) if c.ema_decay > 0 else None
    use_compile = uses_compile(c, rt)
    trained = wrap(model) if wrap is not None else model
    # after the wrap: a distributed run's processes hold rank 0's weights from here
    lookahead = Lookahead(model) if c.lookahead else None
    forward_model = compile_model(trained) if use_compile else trained
    eval_model = ema.module if ema is not None else model
    if ema is None:
        eval_forward = forward_model
    else:
        eval_forward = compile_model(eval_model) if use_compile else eval_model
    return Optimisation(
        optimizer,
        sam,
        plateau,
        scaler,
        ema,
        lookahead,
        use_compile,
        forward_model,
        eval_model,
        eval_forward,
    )
