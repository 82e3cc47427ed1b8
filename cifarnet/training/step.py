"""The inner loops: one optimisation step and a full evaluation pass. Pure: they return
numbers (as tensors on the device, to avoid host syncs), never print and never touch files."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cifarnet.metrics import topk_hits
from cifarnet.runtime.device import Runtime
from cifarnet.training.compiling import pad_batch
from cifarnet.training.sam import SAM, sam_step


@dataclass
class StepResult:
    loss_sum: torch.Tensor  # summed (not mean) loss of the batch, on device, fp32
    correct: torch.Tensor  # number of top-1 hits, on device
    count: int


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer | SAM,
    runtime: Runtime,
    label_smoothing: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Forward, backward and optimizer step on one batch: images (N, 3, H, W); labels (N,) class
    indices, or (N, classes) soft targets (MixUp / CutMix), where a top-1 hit means the
    prediction is the target's largest share. With SAM as the optimizer: its two passes (no
    `scaler`: see sam.check_sam_precision), the loss and hits those of the first."""

    def forward() -> tuple[torch.Tensor, torch.Tensor]:
        with runtime.autocast():
            logits = model(images)
            return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing), logits

    if isinstance(optimizer, SAM):
        loss, logits = sam_step(optimizer, model, forward)
    else:
        loss, logits = forward()
        _step(loss, optimizer, scaler)
    with torch.no_grad():
        hard = labels if labels.dim() == 1 else labels.argmax(1)
        correct = (logits.argmax(1) == hard).sum()
    return StepResult(loss.detach() * len(labels), correct, len(labels))


def _step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Backward and the optimizer's step (through the fp16 loss scaler when there is one)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


@dataclass
class EvalResult:
    loss: float
    top1: float  # percent
    top5: float  # percent
    count: int
    logits: torch.Tensor | None = None  # (N, classes) fp32 on CPU, when asked for


def _views_logits(model: nn.Module, images: torch.Tensor, flip: bool, shift: int) -> torch.Tensor:
    """fp32 logits (N, classes) of images (N, 3, H, W), averaged over the test-time views."""

    def mirrored(x: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()
        return 0.5 * (logits + model(x.flip(3)).float()) if flip else logits

    logits = mirrored(images)
    if shift == 0:
        return logits
    h, w = images.shape[-2:]
    # `cifarnet evaluate`'s models take [0, 1] images (NormalizedModel): zeros are black, the
    # fill of the training crops
    padded = F.pad(images, (shift, shift, shift, shift))
    down_right = padded[..., :h, :w]  # pixel (i, j) is the image's (i - shift, j - shift)
    up_left = padded[..., 2 * shift :, 2 * shift :]
    return 0.5 * logits + 0.25 * (mirrored(down_right) + mirrored(up_left))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    keep_logits: bool = False,
    tta_flip: bool = False,
    tta_shift: int = 0,
    pad_to: int | None = None,
    all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Loss (mean cross-entropy, no smoothing), top-1 and top-5 over all batches.
    With tta_flip the logits are the mean of the image's and its mirror's; with tta_shift S
    (pixels), half of those logits plus a quarter of the same (mirrored or not) for each of the
    image shifted S px down-right and S px up-left, the edge filled with zeros (black, as the
    training crops pad): with the flip, 6 views, as airbench's multi-crop evaluation. `pad_to`:
    a shorter batch is padded to that size (for a compiled model: one shape) and the padding's
    outputs dropped. `all_sum`: adds the sums over the processes of a distributed run, each of which
    evaluated its part of the images (the logits kept are this process's own)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device)
    hits1 = torch.zeros((), device=runtime.device, dtype=torch.long)
    hits5 = torch.zeros((), device=runtime.device, dtype=torch.long)
    count = 0
    kept = []
    try:
        for images, labels in batches:
            n = len(labels)
            if pad_to is not None:
                images = pad_batch(images, pad_to)
            with runtime.autocast():
                logits = _views_logits(model, images, tta_flip, tta_shift)[:n]
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            # the same tie-breaking as evaluate's per-class accuracy and confusion matrix
            hits1 += topk_hits(logits, labels, 1).sum()
            hits5 += topk_hits(logits, labels, 5).sum()
            count += n
            if keep_logits:
                kept.append(logits.cpu())
    finally:
        model.train(was_training)
    # (loss sum, top-1 hits, top-5 hits, images): float64 counts stay exact
    sums = torch.stack([loss_sum.double(), hits1.double(), hits5.double()])
    sums = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)])
    if all_sum is not None:
        sums = all_sum(sums)
    total_loss, total1, total5, total = sums.tolist()
    if total == 0:
        return EvalResult(float("nan"), float("nan"), float("nan"), 0)
    return EvalResult(
        loss=total_loss / total,
        top1=100.0 * total1 / total,
        top5=100.0 * total5 / total,
        count=int(total),
        logits=torch.cat(kept) if keep_logits else None,
    )
