"""Augmentation policies on a whole uint8 batch, on whatever device it is on: AutoAugment
(Cubuk et al. 2019, the CIFAR-10 policy), RandAugment (Cubuk et al. 2020), TrivialAugment wide
(Müller & Hutter 2021) and random erasing (Zhong et al. 2020).

Each image draws its own operations and magnitudes, but images that drew the same (operation,
magnitude) are transformed together by one torchvision.transforms.v2.functional call, so a GPU
gets a few batched kernels per step rather than one per image. The operations and their
magnitude scales are torchvision's (its AutoAugment, RandAugment and TrivialAugmentWide).

Every draw comes from a CPU torch.Generator the caller passes in, e.g. `generator_for((seed,
epoch, step))`: the same generator state gives the same output, so a resumed run augments
exactly as the uninterrupted one would have. Input and output: uint8 (N, 3, H, W) after crop and
flip, before normalisation; the input is not modified.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import AutoAugment as _TorchvisionAutoAugment
from torchvision.transforms import AutoAugmentPolicy

from cifarnet.config.settings import POLICIES
from cifarnet.errors import ConfigError, unknown_name

Draw = tuple[str, float] | None  # (operation, signed magnitude), or None: this image skips


def _shear(x: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    # magnitude is the shear factor; torchvision's affine takes degrees, about the corner
    degrees = [math.degrees(math.atan(sx)), math.degrees(math.atan(sy))]
    return F.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=degrees, center=[0, 0])


def _translate(x: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    return F.affine(x, angle=0.0, translate=[int(dx), int(dy)], scale=1.0, shear=[0.0, 0.0])


# operation -> fn(uint8 images (n, 3, H, W), magnitude) -> images; nearest interpolation and a
# black fill where geometry uncovers pixels, as torchvision's policies do
OPERATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "Identity": lambda x, m: x,
    "ShearX": lambda x, m: _shear(x, m, 0.0),
    "ShearY": lambda x, m: _shear(x, 0.0, m),
    "TranslateX": lambda x, m: _translate(x, m, 0.0),  # m in pixels
    "TranslateY": lambda x, m: _translate(x, 0.0, m),
    "Rotate": lambda x, m: F.rotate(x, m),  # m in degrees
    "Brightness": lambda x, m: F.adjust_brightness(x, 1.0 + m),
    "Color": lambda x, m: F.adjust_saturation(x, 1.0 + m),
    "Contrast": lambda x, m: F.adjust_contrast(x, 1.0 + m),
    "Sharpness": lambda x, m: F.adjust_sharpness(x, 1.0 + m),
    "Posterize": lambda x, m: F.posterize(x, int(m)),  # m: bits kept
    "Solarize": lambda x, m: F.solarize(x, m),  # m: threshold in pixel values
    "AutoContrast": lambda x, m: F.autocontrast(x),
    "Equalize": lambda x, m: F.equalize(x),
    "Invert": lambda x, m: F.invert(x),
}


def _space(bins: int, height: int, width: int, wide: bool) -> dict[str, tuple[list[float], bool]]:
    """operation -> (magnitude of each bin, whether a random sign applies): torchvision's
    augmentation spaces (`wide`: TrivialAugmentWide's)."""

    def linspace(end: float) -> list[float]:
        return torch.linspace(0.0, end, bins).tolist()

    posterize_steps = 6 if wide else 4
    space = {
        "Identity": ([0.0] * bins, False),
        "ShearX": (linspace(0.99 if wide else 0.3), True),
        "ShearY": (linspace(0.99 if wide else 0.3), True),
        "TranslateX": (linspace(32.0 if wide else 150.0 / 331.0 * width), True),
        "TranslateY": (linspace(32.0 if wide else 150.0 / 331.0 * height), True),
        "Rotate": (linspace(135.0 if wide else 30.0), True),
        "Posterize": (
            (8 - (torch.arange(bins) / ((bins - 1) / posterize_steps)).round()).tolist(),
            False,
        ),
        "Solarize": (torch.linspace(255.0, 0.0, bins).tolist(), False),
        "AutoContrast": ([0.0] * bins, False),
        "Equalize": ([0.0] * bins, False),
        "Invert": ([0.0] * bins, False),
    }
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        space[name] = (linspace(0.99 if wide else 0.9), True)
    return space


class BatchPolicy:
    """Base: `policy(images, generator)` -> augmented copy. Subclasses draw, per image, one
    (operation, magnitude) per stage; each stage is applied grouped by what was drawn."""

    name = "policy"
    min_size = 1  # the smallest height and width the policy serves
    size_reason = ""  # why, for the error message

    def __init__(self, image_size: int) -> None:
        if image_size < self.min_size:
            raise ConfigError(
                f"augmentation {self.name!r} needs images of at least {self.min_size}x"
                f"{self.min_size} pixels, got {image_size}x{image_size}{self.size_reason}"
            )
        self.image_size = image_size

    def draw(self, n: int, height: int, width: int, g: torch.Generator) -> list[list[Draw]]:
        """Per stage, per image: the operation and signed magnitude, or None to skip."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(images, self.min_size, self.name)
        with one_thread_on_cpu(images.device):
            out = images.clone()
            for stage in self.draw(len(images), *images.shape[-2:], generator):
                apply_grouped(out, stage)
        return out


@contextlib.contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """On the CPU, run torch on one intra-op thread: a policy's calls work on a few small images
    each, too little to share, and on a busy machine every parallel region waits for a
    descheduled thread (benchmarks/augment_cost.py on 2 shared cores, batch 128: RandAugment
    1,333 images/s with 2 threads, 14,649 with 1)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def apply_grouped(images: torch.Tensor, draws: Sequence[Draw]) -> None:
    """Apply each image's drawn (operation, magnitude) in place, one functional call per
    distinct pair."""
    groups: dict[tuple[str, float], list[int]] = defaultdict(list)
    for i, drawn in enumerate(draws):
        if drawn is not None and drawn[0] != "Identity":
            groups[drawn].append(i)
    # every group's rows in one index tensor: one host-to-device copy a stage, not one a group
    index = to_device(torch.tensor([i for rows in groups.values() for i in rows]), images.device)
    start = 0
    for (op, magnitude), rows in groups.items():
        part = index[start : start + len(rows)]
        start += len(rows)
        images[part] = OPERATIONS[op](images[part], magnitude)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` (drawn on the host) on `device`; to a GPU through pinned memory and without
    waiting, so the host never stalls on the kernels queued before the copy."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _check_batch(images: torch.Tensor, min_size: int, name: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ConfigError(
            f"augmentation {name!r} takes uint8 (N, 3, H, W) images, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if min(images.shape[-2:]) < min_size:
        raise ConfigError(
            f"augmentation {name!r} needs images of at least {min_size}x{min_size} pixels, got "
            f"{images.shape[-2]}x{images.shape[-1]}"
        )


def _signed(magnitude: float, signed: bool, negative: bool) -> float:
    return -magnitude if signed and negative else magnitude


class AutoAugment(BatchPolicy):
    """AutoAugment's CIFAR-10 policy (the table torchvision ships): each image draws one of its
    25 sub-policies, two operations each applied with its own probability and magnitude."""

    name = "autoaugment"
    min_size = 3  # Sharpness smooths with a 3x3 kernel; torchvision leaves smaller images be
    size_reason = " (Sharpness's 3x3 kernel)"

    def __init__(self, image_size: int = 32) -> None:
        super().__init__(image_size)
        self.subpolicies = _TorchvisionAutoAugment(AutoAugmentPolicy.CIFAR10).policies

    def draw(self, n: int, height: int, width: int, g: torch.Generator) -> list[list[Draw]]:
        space = _space(10, height, width, wide=False)
        chosen = torch.randint(len(self.subpolicies), (n,), generator=g).tolist()
        stages = []
        for stage in range(2):
            applies = torch.rand(n, generator=g).tolist()
            negative = (torch.rand(n, generator=g) < 0.5).tolist()
            draws: list[Draw] = []
            for i in range(n):
                op, probability, level = self.subpolicies[chosen[i]][stage]
                if applies[i] >= probability:
                    draws.append(None)
                    continue
                magnitudes, signed = space[op]
                magnitude = magnitudes[level] if level is not None else 0.0
                draws.append((op, _signed(magnitude, signed, negative[i])))
            stages.append(draws)
        return stages


RANDAUGMENT_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
MAGNITUDE_BINS = 31  # torchvision's RandAugment and TrivialAugmentWide: magnitudes 0..30


class RandAugment(BatchPolicy):
    """RandAugment: `n` operations per image, each drawn uniformly from the 14, all at
    magnitude `m` of 0..30 (torchvision's scale; its default is n=2, m=9)."""

    name = "randaugment"
    min_size = 3  # as AutoAugment: Sharpness
    size_reason = AutoAugment.size_reason

    def __init__(self, n: int = 2, m: int = 9, image_size: int = 32) -> None:
        for label, value, low, high in (
            ("N", n, 1, len(RANDAUGMENT_OPS)),
            ("M", m, 0, MAGNITUDE_BINS - 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(
                    f"RandAugment {label} must be an integer from {low} to {high}, got {value!r}"
                )
        super().__init__(image_size)
        self.n, self.m = n, m

    def draw(self, n: int, height: int, width: int, g: torch.Generator) -> list[list[Draw]]:
        space = _space(MAGNITUDE_BINS, height, width, wide=False)
        stages = []
        for _ in range(self.n):
            ops = torch.randint(len(RANDAUGMENT_OPS), (n,), generator=g).tolist()
            negative = (torch.rand(n, generator=g) < 0.5).tolist()
            draws: list[Draw] = []
            for i in range(n):
                op = RANDAUGMENT_OPS[ops[i]]
                magnitudes, signed = space[op]
                draws.append((op, _signed(magnitudes[self.m], signed, negative[i])))
            stages.append(draws)
        return stages


class TrivialAugmentWide(BatchPolicy):
    """TrivialAugment (wide magnitude ranges): one operation per image, drawn uniformly from the
    14, at a magnitude drawn uniformly from 0..30."""

    name = "trivialaugment"
    min_size = 32
    size_reason = " (its translations reach 32 pixels, the whole of a smaller image)"

    def __init__(self, image_size: int = 32) -> None:
        super().__init__(image_size)

    def draw(self, n: int, height: int, width: int, g: torch.Generator) -> list[list[Draw]]:
        space = _space(MAGNITUDE_BINS, height, width, wide=True)
        ops = torch.randint(len(RANDAUGMENT_OPS), (n,), generator=g).tolist()
        levels = torch.randint(MAGNITUDE_BINS, (n,), generator=g).tolist()
        negative = (torch.rand(n, generator=g) < 0.5).tolist()
        draws: list[Draw] = []
        for i in range(n):
            op = RANDAUGMENT_OPS[ops[i]]
            magnitudes, signed = space[op]
            draws.append((op, _signed(magnitudes[levels[i]], signed, negative[i])))
        return [draws]


class RandomErasing:
    """Random erasing with probability `p`: a box of 2-33% of the image, aspect ratio 0.3-3.3
    (log-uniform), filled with random pixel values (Zhong et al.'s best variant). The box is
    clipped to the image rather than drawn again when it does not fit. Every image has its own
    box, so it is applied as one masked blend over the batch, not grouped calls."""

    name = "erasing"
    min_size = 8  # the smallest box, 2% of the image, must hold a pixel: 8 * 8 * 0.02 = 1.3
    scale = (0.02, 0.33)
    ratio = (0.3, 3.3)

    def __init__(self, p: float, image_size: int = 32) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"random erasing probability must be in [0, 1], got {p!r}")
        if image_size < self.min_size:
            raise ConfigError(
                f"random erasing needs images of at least {self.min_size}x{self.min_size} "
                f"pixels (its smallest box, 2% of the image, must hold a pixel), got "
                f"{image_size}x{image_size}"
            )
        self.p = float(p)
        self.image_size = image_size

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _check_batch(images, self.min_size, self.name)
        with one_thread_on_cpu(images.device):
            return self._erase(images, generator)

    def _erase(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = images.shape
        g = generator
        erase = torch.rand(n, generator=g) < self.p
        area = h * w * torch.empty(n).uniform_(*self.scale, generator=g)
        log_ratio = torch.empty(n).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g
        )
        box_h = (area * log_ratio.exp()).sqrt().round().clamp(1, h).long()
        box_w = (area / log_ratio.exp()).sqrt().round().clamp(1, w).long()
        top = (torch.rand(n, generator=g) * (h - box_h + 1)).long()
        left = (torch.rand(n, generator=g) * (w - box_w + 1)).long()
        noise = torch.randint(0, 256, images.shape, generator=g, dtype=torch.uint8)
        rows, cols = torch.arange(h), torch.arange(w)
        inside_h = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (n, h)
        inside_w = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (n, w)
        mask = erase[:, None, None] & inside_h[:, :, None] & inside_w[:, None, :]  # (n, h, w)
        return torch.where(
            to_device(mask[:, None], images.device), to_device(noise, images.device), images
        )


class Compose:
    """A policy, then random erasing: the callable a trainer holds."""

    def __init__(self, *steps: Callable[[torch.Tensor, torch.Generator], torch.Tensor]) -> None:
        self.steps = steps

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with one_thread_on_cpu(images.device):
            for step in self.steps:
                images = step(images, generator)
        return images


def make_policy(
    name: str = "none",
    *,
    n: int = 2,
    m: int = 9,
    erasing: float = 0.0,
    image_size: int = 32,
) -> Compose:
    """The batch augmentation `name` (one of POLICIES; `n`, `m` are RandAugment's), followed
    by random erasing when `erasing` > 0. `image_size`: the smallest height/width it will see.
    Raises ConfigError for an unknown name or a setting it cannot serve."""
    if name not in POLICIES:
        raise unknown_name("augmentation policy", name, POLICIES)
    steps: list[Callable] = []
    if name == "autoaugment":
        steps.append(AutoAugment(image_size))
    elif name == "randaugment":
        steps.append(RandAugment(n, m, image_size))
    elif name == "trivialaugment":
        steps.append(TrivialAugmentWide(image_size))
    erase = RandomErasing(erasing, image_size)  # validates the probability even when 0
    if erase.p > 0:
        steps.append(erase)
    return Compose(*steps)


class SeededPolicy:
    """`policy` with its draws for each training batch keyed by (seed, epoch, step): a batch
    is augmented the same whether the run was resumed before it or not."""

    def __init__(
        self, policy: Callable[[torch.Tensor, torch.Generator], torch.Tensor], seed: int
    ) -> None:
        self.policy, self.seed = policy, seed

    def __call__(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> augmented uint8 (N, 3, H, W), for step `step` (from 1) of
        `epoch` (from 1)."""
        return self.policy(images, generator_for((self.seed, epoch, step)))


def generator_for(key: Sequence[int]) -> torch.Generator:
    """A CPU generator seeded by `key`, e.g. (seed, epoch, step): the draws of one batch."""
    seed = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))
