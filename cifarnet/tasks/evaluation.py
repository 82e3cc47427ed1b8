"""`evaluate`: a checkpoint or an exported .onnx model on a CIFAR split; numbers, no printing.

`evaluate(...)` returns an `Evaluation`; `Evaluation.save(out)` writes the summary CSV, the
per-class CSV and the confusion matrix (CSV and PNG heatmap) next to each other.
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarnet import metrics
from cifarnet.data.datasets import get_spec as dataset_spec
from cifarnet.data.datasets import load_dataset, train_fingerprint
from cifarnet.data.loader import BatchLoader
from cifarnet.data.splits import train_val_indices
from cifarnet.errors import ConfigError, DataError
from cifarnet.io.tables import check_csv_name, check_new_files, csv_bytes, write_all
from cifarnet.io.untrusted import printable
from cifarnet.tasks.inference import (
    LoadedModel,
    ModelInfo,
    check_finite,
    find_data_dir,
    load_inference_model,
)
from cifarnet.training.step import evaluate as run_evaluation

SPLITS = ("test", "val", "train")
MAX_TTA_SHIFT = 8  # pixels: beyond a quarter of a 32-px image the views stop being the image
SUMMARY_COLUMNS = [
    "checkpoint",
    "dataset",
    "split",
    "images",
    "loss",
    "top1",
    "top5",
    "superclass_top1",
    "ece",
    "seconds",
    "images_per_second",
    "precision",  # how the numbers were made: bf16 and fp32 differ in the last decimals
    "device",
    "tta",
    "tta_shift",
]


@dataclass
class Evaluation:
    """Results of one evaluation. Accuracies and ece in percent; loss is mean cross-entropy."""

    checkpoint: str
    kind: str  # "checkpoint" or "onnx"
    defaulted: bool  # the checkpoint was picked as the newest run's best.pt
    dataset: str
    split: str
    images: int
    loss: float
    top1: float
    top5: float
    superclass_top1: float | None
    ece: float
    seconds: float  # the inference pass only (data loading excluded)
    device: str
    precision: str
    tta: bool  # the mirror image's logits averaged in
    tta_shift: int  # pixels; 0: no shifted views (see training.step.evaluate)
    classes: list[str]
    superclasses: list[str] | None
    fine_to_coarse: list[int] | None
    class_images: list[int]  # per class
    class_top1: list[float]  # per class, percent (NaN: no image of that class in the split)
    class_top5: list[float]
    confusion: torch.Tensor  # int64 (C, C): [true, predicted]
    confused_pairs: list[tuple[int, int, int]]  # (true, predicted, count), most frequent first

    def views_label(self) -> str:
        """The test-time augmentation in words, for titles ("" without any)."""
        if self.tta_shift:
            return f" (flip + {self.tta_shift}-px shift TTA, 6 views)"
        return " (flip TTA)" if self.tta else ""

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def summary(self) -> dict[str, Any]:
        """The one row of the summary CSV."""
        return {
            "checkpoint": self.checkpoint,
            "dataset": self.dataset,
            "split": self.split,
            "images": self.images,
            "loss": self.loss,
            "top1": self.top1,
            "top5": self.top5,
            "superclass_top1": self.superclass_top1,
            "ece": self.ece,
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "precision": self.precision,
            "device": self.device,
            "tta": self.tta,
            "tta_shift": self.tta_shift,
        }

    def ranked_classes(self) -> list[int]:
        """Class indices from the best top-1 to the worst (classes without images last)."""
        return sorted(
            range(len(self.classes)),
            key=lambda c: (math.isnan(self.class_top1[c]), -_nan_to(self.class_top1[c]), c),
        )

    def per_class_rows(self) -> list[dict[str, Any]]:
        rows = []
        for c, name in enumerate(self.classes):
            rows.append(
                {
                    "index": c,
                    "class": name,
                    "superclass": self.superclass_of(c),
                    "images": self.class_images[c],
                    "top1": self.class_top1[c],
                    "top5": self.class_top5[c],
                }
            )
        return rows

    def superclass_of(self, c: int) -> str | None:
        if self.superclasses is None or self.fine_to_coarse is None:
            return None
        return self.superclasses[self.fine_to_coarse[c]]

    def save(self, out: str | os.PathLike, force: bool = False) -> list[Path]:
        """Write the four files next to `out` (see `output_paths`), all or none; returns their
        paths."""
        paths = output_paths(out)
        check_new_files(paths, force)
        summary, per_class, confusion_csv, heatmap = paths
        confusion = {"true_class": self.classes}
        for p, name in enumerate(self.classes):
            confusion[name] = self.confusion[:, p].tolist()
        write_all(
            {
                summary: csv_bytes([self.summary()], SUMMARY_COLUMNS),
                per_class: csv_bytes(self.per_class_rows()),
                confusion_csv: csv_bytes(confusion),
                heatmap: _heatmap_png(self),
            }
        )
        return paths


def output_paths(out: str | os.PathLike) -> list[Path]:
    """results.csv -> [results.csv, results_per_class.csv, results_confusion.csv,
    results_confusion.png]."""
    out = Path(out)
    check_csv_name(out, "results.csv")
    stem = out.with_suffix("")
    return [
        out,
        Path(f"{stem}_per_class.csv"),
        Path(f"{stem}_confusion.csv"),
        Path(f"{stem}_confusion.png"),
    ]


def evaluate(
    checkpoint: str | os.PathLike | None = None,
    *,
    data_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    split: str = "test",
    batch_size: int = 1000,
    device: str = "auto",
    precision: str = "auto",
    tta: bool = False,
    tta_shift: int = 0,
    download: bool = True,
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Evaluate a checkpoint (best.pt / last.pt) or an exported .onnx file on a dataset split.

    With no checkpoint the newest runs/*/best.pt under the current folder is used (see
    `Evaluation.checkpoint` / `.defaulted`). `split` "val" is the run's own held-out split
    (its val_size and seed); "train" the images the run trained on (its --subset too). With
    `out` the result is also written (see `Evaluation.save`); existing files are refused
    unless `force`. `progress(done, total)` is called with the images evaluated so far after
    each batch (for a progress bar). `tta` averages each image's logits with its mirror's;
    `tta_shift` (pixels, implies `tta`) adds the mirrored pairs shifted by that much diagonally.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if type(tta_shift) is not int or not 0 <= tta_shift <= MAX_TTA_SHIFT:  # bool is no count
        raise ConfigError(
            f"--tta-shift must be a whole number of pixels from 0 to {MAX_TTA_SHIFT}, "
            f"got {tta_shift!r}"
        )
    if out is not None:
        check_new_files(output_paths(out), force)  # fail before the slow part
    loaded = load_inference_model(checkpoint, device, precision)
    info = loaded.info
    if dataset is not None and dataset != info.dataset:
        dataset_spec(dataset)  # an unknown name gets the standard message
        raise ConfigError(
            f"{loaded.path} is a {info.dataset} model ({info.num_classes} classes); "
            f"it cannot be evaluated on {dataset}"
        )
    found = find_data_dir(info, data_dir)
    run_folder = info.data_dir if data_dir is None and found is None else None
    data = load_dataset(info.dataset, found, download=download, searched_too=run_folder)
    if data.classes != info.classes:
        raise DataError(
            f"the class names of {data.source} differ from those stored in {loaded.path}"
        )
    images, labels = _split(data, info, split, loaded)
    tta = tta or tta_shift > 0
    result = _run(loaded, images, labels, split, batch_size, tta, tta_shift, progress)
    if out is not None:
        result.save(out, force)
    return result


def _reported(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    total: int,
    progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches; after each one has been used, progress(images done, total)."""
    done = 0
    for images, labels in batches:
        yield images, labels
        done += len(labels)
        if progress is not None:
            progress(done, total)


def _split(
    data: Any, info: ModelInfo, split: str, loaded: LoadedModel
) -> tuple[torch.Tensor, torch.Tensor]:
    if split == "test":
        return data.test_images, data.test_labels
    if info.val_size is None or info.seed is None:
        raise ConfigError(
            f"--split {split}: {loaded.path} does not record its run's validation split "
            "(val_size, seed); use --split test"
        )
    if split == "val" and info.val_size == 0:
        raise ConfigError(f"--split val: the run of {loaded.path} held out no validation images")
    if info.train_fingerprint not in (
        None,
        train_fingerprint(data.train_images, data.train_labels),
    ):
        raise DataError(
            f"--split {split}: {data.source} is not the copy of {info.dataset} that the run of "
            f"{loaded.path} was split from (its training images or their order differ), so "
            "the run's split cannot be rebuilt from it; use --split test"
        )
    # the same split (and subset) the trainer drew
    train_idx, val_idx = train_val_indices(
        data.train_labels, info.val_size, info.seed, info.subset, info.dataset
    )
    idx = val_idx if split == "val" else train_idx
    return data.train_images[idx], data.train_labels[idx]


def _run(
    loaded: LoadedModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    split: str,
    batch_size: int,
    tta: bool,
    tta_shift: int,
    progress: Callable[[int, int], None] | None,
) -> Evaluation:
    info, rt = loaded.info, loaded.runtime
    loader = BatchLoader(images.to(rt.device), labels.to(rt.device), batch_size, loaded.input)
    batches = _reported(loader.batches(), len(labels), progress)
    t0 = time.perf_counter()
    result = run_evaluation(
        loaded.module, batches, rt, keep_logits=True, tta_flip=tta, tta_shift=tta_shift
    )
    seconds = time.perf_counter() - t0
    logits = result.logits
    assert logits is not None  # keep_logits=True
    check_finite(logits, loaded.path)
    labels = labels.cpu()
    predictions = logits.argmax(1)
    c = info.num_classes
    counts, top1 = metrics.per_class_accuracy(predictions == labels, labels, c)
    _, top5 = metrics.per_class_accuracy(metrics.topk_hits(logits, labels, 5), labels, c)
    confusion = metrics.confusion_matrix(predictions, labels, c)
    return Evaluation(
        checkpoint=str(loaded.path),
        kind=loaded.kind,
        defaulted=loaded.defaulted,
        dataset=info.dataset,
        split=split,
        images=result.count,
        loss=result.loss,
        top1=result.top1,
        top5=result.top5,
        superclass_top1=metrics.superclass_accuracy(predictions, labels, info.fine_to_coarse)
        if info.fine_to_coarse
        else None,
        ece=metrics.expected_calibration_error(logits.softmax(1), labels),
        seconds=seconds,
        device=str(rt.device),
        precision=rt.precision,
        tta=tta,
        tta_shift=tta_shift,
        classes=info.classes,
        superclasses=info.superclasses,
        fine_to_coarse=info.fine_to_coarse,
        class_images=counts.tolist(),
        class_top1=top1.tolist(),
        class_top5=top5.tolist(),
        confusion=confusion,
        confused_pairs=metrics.confused_pairs(confusion, 10),
    )


def _nan_to(value: float, fill: float = -1.0) -> float:
    return fill if math.isnan(value) else value


def _heatmap_png(result: Evaluation) -> bytes:
    """The confusion matrix as a heatmap, rows normalised to the share of each true class."""
    from matplotlib.figure import Figure  # without pyplot: see plots.plot_history

    c = len(result.classes)
    counts = result.confusion.double()
    shares = counts / counts.sum(1, keepdim=True).clamp(min=1)
    size = 6 if c <= 20 else 14
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 8 if c <= 20 else 4
    # printable: matplotlib's font code refuses the surrogates of a name that is not UTF-8
    labels = [printable(name) for name in result.classes]
    ax.set_xticks(range(c), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(c), labels, fontsize=font)
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{printable(Path(result.checkpoint).name)} on {result.dataset} {result.split}"
        f"{result.views_label()}: top-1 {result.top1:.2f}% ({result.precision})",
    )
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the true class's images")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()
