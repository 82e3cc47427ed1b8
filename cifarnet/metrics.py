"""Classification metrics on logits: small pure functions on tensors, no printing, no files.

Conventions: `logits` is float (N, C), `labels` int64 (N,), predictions int64 (N,). Accuracies
and the calibration error are returned in percent, like every accuracy column of cifarnet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ECE_BINS = 15


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """bool (N,): label among the k highest logits. Ties rank the lower class index first and
    NaN above every number, as argmax does (bf16 logits often tie), so top-1 hits are exactly
    argmax == label and top-k hits never fall below them; `topk` leaves the order of tied
    values unspecified."""
    label_logit = logits.gather(1, labels[:, None])  # (N, 1)
    classes = torch.arange(logits.shape[1], device=logits.device)
    # NaN ranks above every number, as in argmax (a NaN label logit is not a free hit)
    nan, label_nan = logits.isnan(), label_logit.isnan()
    above = (logits > label_logit) | (nan & ~label_nan)
    tied = (logits == label_logit) | (nan & label_nan)
    ahead = above | (tied & (classes < labels[:, None]))
    return ahead.sum(1) < k


def per_class_accuracy(
    hits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images per class int64 (C,), accuracy per class in percent float64 (C,), NaN where a
    class has no image) from per-sample hits bool (N,)."""
    counts = torch.bincount(labels, minlength=num_classes)
    correct = torch.bincount(labels, weights=hits.double(), minlength=num_classes)
    accuracy = torch.where(counts > 0, 100.0 * correct / counts.clamp(min=1), float("nan"))
    return counts, accuracy


def superclass_accuracy(
    predictions: torch.Tensor, labels: torch.Tensor, fine_to_coarse: Sequence[int]
) -> float:
    """Percent of samples whose predicted fine class lies in the true superclass (CIFAR-100's
    coarse accuracy of the fine predictions)."""
    mapping = torch.as_tensor(list(fine_to_coarse), dtype=torch.long)
    hits = (mapping[predictions] == mapping[labels]).sum().item()
    return 100.0 * hits / len(labels)


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """Expected calibration error in percent over `bins` equal-width confidence bins
    (lo, hi]: sum over bins of (bin share of samples) * |bin accuracy - bin mean confidence|,
    with the confidence being the top softmax probability (Guo et al., 2017)."""
    confidence, predictions = probabilities.float().max(1)
    correct = (predictions == labels).float()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=confidence.dtype)
    index = torch.bucketize(confidence, edges[1:-1], right=False)  # bin i holds (i/B, (i+1)/B]
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence.double(), minlength=bins)
    hit_sum = torch.bincount(index, weights=correct.double(), minlength=bins)
    gap = (hit_sum - conf_sum).abs()  # = count * |accuracy - confidence| per bin
    return 100.0 * (gap.sum() / count.sum()).item()


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """int64 (C, C): entry [t, p] counts samples of true class t predicted as p."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def confused_pairs(confusion: torch.Tensor, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal entries of a confusion matrix as (true, predicted, count),
    largest first (ties: lower true, then lower predicted class first); zero counts left out."""
    c = confusion.shape[0]
    off = confusion.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    # stable descending sort keeps row-major order among equal counts
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    return [(int(i) // c, int(i) % c, int(flat[i])) for i in order.tolist() if int(flat[i]) > 0]
