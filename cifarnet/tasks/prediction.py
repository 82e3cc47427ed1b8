"""`predict`: top-k classes for image files, folders and globs; one row per input, no printing.

Files are found by `cifarnet.tasks.images.expand_sources` and decoded on worker threads by
`cifarnet.tasks.images.load_images` (any mode and size -> 32x32 RGB by the resize policy, EXIF
orientation applied) while the model runs batch by batch. A file that cannot be read gets its
error in its row; the others are still predicted.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifarnet.errors import CifarnetWarning, ConfigError
from cifarnet.io.tables import check_csv_name, check_new_files, write_csv
from cifarnet.tasks.images import RESIZE_POLICIES, ImageResult, expand_sources, load_images
from cifarnet.tasks.inference import LoadedModel, check_finite, load_inference_model

MAX_WORKERS = 256  # decoding threads; beyond about 8 they mostly contend
COLUMNS = ["path", "label", "superclass", "probability", "topk", "error"]


@dataclass
class Prediction:
    """One input. On success `error` is "" and the top-k lists are filled (highest first)."""

    path: str
    labels: list[str]
    probabilities: list[float]  # softmax probabilities in [0, 1], aligned with `labels`
    superclass: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def row(self) -> dict[str, Any]:
        """The CSV row: path, label, superclass, probability, topk as text, error."""
        return {
            "path": self.path,
            "label": self.labels[0] if self.ok else None,
            "superclass": self.superclass,
            "probability": self.probabilities[0] if self.ok else None,
            "topk": "; ".join(
                f"{name} {p:.4f}" for name, p in zip(self.labels, self.probabilities, strict=True)
            ),
            "error": self.error,
        }


@dataclass
class Predictions:
    model: str
    defaulted: bool  # the model was picked as the newest run's best.pt
    topk: int
    resize: str
    items: list[Prediction]
    seconds: float

    @property
    def failed(self) -> int:
        return sum(not p.ok for p in self.items)

    def rows(self) -> list[dict[str, Any]]:
        return [p.row() for p in self.items]

    def save(self, out: str | os.PathLike, force: bool = False) -> Path:
        check_new_files([out], force)
        write_csv(self.rows(), out, COLUMNS)
        return Path(out)


def predict(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike | None = None,
    *,
    topk: int = 5,
    resize: str = "stretch",
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 0,
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Predictions:
    """Predict the classes of image files, folders (searched recursively) and glob patterns.

    `sources`: one such path or pattern, or a list of them.
    `model`: a checkpoint or an exported .onnx file; default the newest runs/*/best.pt.
    `resize`: how a non-32x32 image becomes 32x32 (see `cifarnet.tasks.images`): stretch,
    center-crop or letterbox. Sources that match no image give an error row each.
    `progress(done, total)` is called with the inputs handled so far after each batch.
    """
    if resize not in RESIZE_POLICIES:
        raise ConfigError(
            f"unknown --resize {resize!r}; choose one of: {', '.join(RESIZE_POLICIES)}"
        )
    for name, value in (("topk", topk), ("batch-size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"--workers must be 0 (automatic) or more, got {workers!r}")
    if workers > MAX_WORKERS:
        raise ConfigError(f"--workers must be at most {MAX_WORKERS} threads, got {workers!r}")
    if out is not None:
        check_csv_name(out, "predictions.csv")
        check_new_files([out], force)
    loaded = load_inference_model(model, device, precision)
    k = min(topk, loaded.info.num_classes)
    if k < topk:
        warnings.warn(
            f"--topk {topk} is more than the model's {k} classes; listing all {k}",
            CifarnetWarning,
            stacklevel=2,
        )
    t0 = time.perf_counter()
    inputs = _inputs([sources] if isinstance(sources, (str, os.PathLike)) else sources)
    items = []
    for item in _predict_all(loaded, inputs, k, resize, batch_size, workers):
        items.append(item)
        if progress is not None:  # rows arrive a batch at a time
            progress(len(items), len(inputs))
    result = Predictions(
        str(loaded.path), loaded.defaulted, k, resize, items, time.perf_counter() - t0
    )
    if out is not None:
        result.save(out, force)
    return result


def _inputs(sources: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(path, "") for each image found, (source, problem) for a source that gave none; in the
    order of `sources`, a file named twice (by any route) only once."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source in map(str, sources):
        paths, problems = expand_sources([source])
        found.extend((source, problem) for problem in problems)
        for path in paths:
            key = os.path.normcase(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                found.append((path, ""))
    return found


def _predict_all(
    loaded: LoadedModel,
    inputs: list[tuple[str, str]],
    k: int,
    resize: str,
    batch_size: int,
    workers: int,
) -> Iterator[Prediction]:
    """Predictions in input order. Decoding runs ahead on threads while a batch is on the
    model, so thousands of files cost about max(decode, inference), not their sum."""
    paths = [path for path, problem in inputs if not problem]
    images = load_images(paths, size=loaded.info.image_size, resize=resize, workers=workers)
    pending: list[ImageResult] = []
    decoded = 0  # images in `pending` that loaded
    for path, problem in inputs:
        # a source that matched nothing stays in its place in the order, as a failed row
        result = ImageResult(path, None, problem) if problem else next(images)
        pending.append(result)
        decoded += result.pixels is not None
        if decoded >= batch_size:
            yield from _flush(loaded, pending, k)
            pending, decoded = [], 0
    yield from _flush(loaded, pending, k)


def _flush(loaded: LoadedModel, pending: list[ImageResult], k: int) -> Iterator[Prediction]:
    good = [r for r in pending if r.pixels is not None]
    top_p = top_i = None
    if good:
        # (B, H, W, 3) uint8 -> (B, 3, H, W): the layout the model input expects
        batch = torch.from_numpy(np.stack([r.pixels for r in good])).permute(0, 3, 1, 2)
        probabilities = check_finite(loaded.logits(batch), loaded.path).softmax(1)
        top_p, top_i = probabilities.topk(k, dim=1)
    info, row = loaded.info, 0
    for r in pending:
        if r.pixels is None:
            yield Prediction(r.path, [], [], error=r.error)
            continue
        assert top_p is not None and top_i is not None
        indices = top_i[row].tolist()
        superclass = (
            info.superclasses[info.fine_to_coarse[indices[0]]]
            if info.superclasses and info.fine_to_coarse
            else None
        )
        yield Prediction(
            r.path,
            [info.classes[i] for i in indices],
            top_p[row].tolist(),
            superclass,
        )
        row += 1
