"""The validation split and the training subset: seeded, class-stratified index selections.

One implementation serves training and `evaluate --split val`, so both hold out the same images.
"""

from __future__ import annotations

import torch

from cifarnet.errors import ConfigError, DataError


def stratified_split(
    labels: torch.Tensor, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, class-stratified (train, val) index split: each class gives val_size / C images
    (the remainder spread over randomly chosen classes). Indices are sorted."""
    labels = labels.cpu()
    n = len(labels)
    if val_size >= n:
        raise DataError(f"--val-size {val_size} leaves no training images (train has {n})")
    if val_size == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)
    per_class = torch.full((len(classes),), val_size // len(classes))
    per_class[torch.randperm(len(classes), generator=g)[: val_size % len(classes)]] += 1
    val_parts = []
    for c, k in zip(classes.tolist(), per_class.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        if k > len(members):
            raise DataError(
                f"--val-size {val_size} asks {k} images of class {c}, which has {len(members)}"
            )
        val_parts.append(members[torch.randperm(len(members), generator=g)[:k]])
    val = torch.sort(torch.cat(val_parts)).values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


def balanced_subset(
    labels: torch.Tensor, indices: torch.Tensor, size: int, seed: int
) -> torch.Tensor:
    """A seeded subset of `indices` with (as nearly as possible) the same count per class."""
    if size >= len(indices):
        return indices
    g = torch.Generator().manual_seed(seed + 1)
    sub_labels = labels.cpu()[indices]
    # order each class's members randomly, then take round-robin across classes
    order = torch.randperm(len(indices), generator=g)
    rank = torch.empty(len(indices), dtype=torch.long)
    for c in torch.unique(sub_labels).tolist():
        members = order[sub_labels[order] == c]
        rank[members] = torch.arange(len(members))
    tie = torch.rand(len(indices), generator=g)
    chosen = torch.argsort(rank.double() + tie.double() * 0.5)[:size]
    return torch.sort(indices[chosen]).values


def train_val_indices(
    labels: torch.Tensor, val_size: int, seed: int, subset: int | None, dataset: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (train, val) indices of a run, exactly as training draws them: the stratified split
    of `labels` (the training set's, shape (N,)), then with `subset` a class-balanced subset of
    the training part. `dataset` names the data in the error for a subset that is too large."""
    train_idx, val_idx = stratified_split(labels, val_size, seed)
    if subset is None:
        return train_idx, val_idx
    if subset > len(train_idx):
        raise ConfigError(
            f"--subset {subset} is more than the {len(train_idx):,} training images "
            f"({dataset} less the {len(val_idx):,} held out by --val-size)"
        )
    return balanced_subset(labels, train_idx, subset, seed), val_idx
