"""Rich rendering of the results of evaluate, predict, export and benchmark, and the console
the CLI writes on. Display only: the numbers come from the library's result objects."""

from __future__ import annotations

import contextlib
import errno
import math
import os
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cifarnet.io.untrusted import printable

if TYPE_CHECKING:
    from cifarnet.tasks.benchmarking import Benchmark
    from cifarnet.tasks.evaluation import Evaluation
    from cifarnet.tasks.exporting import ExportResult
    from cifarnet.tasks.prediction import Predictions

PREDICTION_ROWS_SHOWN = 100


class PipeSafeConsole(Console):
    """A Console whose closed output (`cifarnet train | head`) raises BrokenPipeError. Rich's
    own handling exits the process (SystemExit), which would end a training run before it saves
    last.pt; the trainer turns the error into a stop at the next safe point, and the other
    commands end as Click ends any command whose output was closed."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        # later writes, and Python's flush at exit, go to the null device instead of failing
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.file.fileno())
        raise BrokenPipeError(errno.EPIPE, "the output was closed")


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}%"


def render_evaluation(console: Console, r: Evaluation) -> None:
    """The summary, best/worst classes and most confused pairs as rich tables."""
    title = f"{shown(r.checkpoint)} on {shown(r.dataset)} {r.split}" + r.views_label()
    summary = Table(title=title, show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for key, value in (
        ("images", f"{r.images:,}"),
        ("loss", f"{r.loss:.4f}"),
        ("top-1", _pct(r.top1)),
        ("top-5", _pct(r.top5)),
        ("superclass top-1", _pct(r.superclass_top1)),
        ("ECE (15 bins)", _pct(r.ece)),
        ("runtime", f"{r.kind}, {r.device} {r.precision}"),
        ("time", f"{r.seconds:.2f} s ({r.images_per_second:,.0f} images/s)"),
    ):
        summary.add_row(key, value)
    console.print(summary)

    ranked = [c for c in r.ranked_classes() if r.class_images[c] > 0]
    n = min(10, len(ranked) // 2) or len(ranked)
    classes = Table(title=f"{n} best and {n} worst classes (top-1)")
    for name in ("best", "top-1", "worst", "top-1 "):
        classes.add_column(name, justify="right" if "top" in name else "left")
    worst = sorted(ranked, key=lambda c: (r.class_top1[c], c))
    for best_c, worst_c in zip(ranked[:n], worst[:n], strict=True):
        classes.add_row(
            shown(r.classes[best_c]),
            _pct(r.class_top1[best_c]),
            shown(r.classes[worst_c]),
            _pct(r.class_top1[worst_c]),
        )
    console.print(classes)

    if r.confused_pairs:
        pairs = Table(title="most confused pairs (true -> predicted)")
        pairs.add_column("true class")
        pairs.add_column("predicted as")
        pairs.add_column("images", justify="right")
        pairs.add_column("of the class", justify="right")
        for true, pred, count in r.confused_pairs:
            share = 100.0 * count / max(r.class_images[true], 1)
            pairs.add_row(shown(r.classes[true]), shown(r.classes[pred]), str(count), _pct(share))
        console.print(pairs)


def _shown_path(path: str) -> str:
    """A path as the terminal can print it: bytes that are not UTF-8 (held by Python as
    surrogates, which a UTF-8 stream refuses) shown as U+FFFD; the CSV keeps the real bytes."""
    return shown(path)


def shown(text: object) -> str:
    """Untrusted text (a class name from a checkpoint, a file name) for rich markup: without
    its control characters and escape sequences (see cifarnet.io.untrusted), brackets escaped."""
    return escape(printable(text))


def render_predictions(console: Console, r: Predictions) -> None:
    """The first rows of the predictions as a rich table (the CSV holds all of them)."""
    table = Table(title=f"{shown(r.model)}: top-{r.topk} ({r.resize} to 32x32)")
    table.add_column("path", overflow="fold")
    table.add_column("label", style="bold")
    table.add_column("superclass")
    table.add_column("probability", justify="right")
    runners_up = r.topk > 1  # the label column holds the first of the top-k, this the rest
    if runners_up:
        table.add_column("next" if r.topk == 2 else f"next {r.topk - 1}", overflow="fold")
    table.add_column("error", style="red")
    for p in r.items[:PREDICTION_ROWS_SHOWN]:
        if p.ok:
            rest = ", ".join(
                f"{shown(name)} {100 * q:.1f}%"
                for name, q in zip(p.labels[1:], p.probabilities[1:], strict=True)
            )
            cells = [shown(p.labels[0]), shown(p.superclass or "")]
            cells += [f"{100 * p.probabilities[0]:.1f}%", *([rest] if runners_up else []), ""]
        else:
            cells = ["", "", "", *([""] if runners_up else []), shown(p.error)]
        table.add_row(_shown_path(p.path), *cells)
    console.print(table)
    if len(r.items) > PREDICTION_ROWS_SHOWN:
        console.print(
            f"... {len(r.items) - PREDICTION_ROWS_SHOWN:,} more rows (all of them in the --out CSV)"
        )
    ok = len(r.items) - r.failed
    rate = ok / max(r.seconds, 1e-9)
    console.print(
        f"{ok:,} predicted, {r.failed:,} failed; decoding and inference {r.seconds:.2f} s "
        f"({rate:,.0f} images/s)"
    )


def render_export(console: Console, r: ExportResult) -> None:
    """Each written file with its parity against PyTorch, per batch size."""
    table = Table(
        title=f"export of {shown(r.checkpoint)}, verified on {r.verify_images} against PyTorch fp32"
    )
    table.add_column("format")
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("batch", justify="right")
    table.add_column("max |delta logit|", justify="right")
    table.add_column("top-1 agreement", justify="right")
    for f in r.files:
        for i, p in enumerate(f.parity):
            first = i == 0
            table.add_row(
                f.format if first else "",
                shown(str(f.path)) if first else "",
                f"{f.size_bytes / 2**20:.1f} MiB" if first else "",
                str(p.batch_size),
                f"{p.max_abs_diff:.2e}",
                _pct(p.top1_agreement),
            )
    console.print(table)
    for f in r.files:
        # which of torch's ONNX exporters made the file (also in its "exporter" metadata)
        made_by = f", {f.exporter} exporter" if f.exporter else ""
        console.print(
            f"wrote {printable(f.path)} ({f.format}{made_by}, verified, {f.seconds:.1f} s)",
            markup=False,
        )


def render_benchmark(console: Console, r: Benchmark) -> None:
    """One table row per runtime and precision measured."""
    batch = r.rows[0].batch_size if r.rows else 0
    devices = ", ".join(dict.fromkeys(row.device for row in r.rows))
    table = Table(
        title=(
            f"{shown(r.model)} (freshly initialised)"
            if r.source == f"model {r.model}"
            else f"{shown(r.source)}: {shown(r.model)}"
        )
        + f", {r.parameters:,} parameters, "
        f"batch {batch}, {devices}"
    )
    for name in ("mode", "runtime", "precision", "layout"):
        table.add_column(name)
    table.add_column("images/s", justify="right", style="bold")
    table.add_column("ms/batch", justify="right")
    for row in r.rows:
        table.add_row(
            row.mode,
            row.runtime if row.device == devices else f"{row.runtime} ({row.device})",
            row.precision,
            "channels_last" if row.channels_last else "NCHW",
            f"{row.images_per_second:,.1f}",
            f"{row.ms_per_batch:.2f}",
        )
    console.print(table)
    for line in r.skipped:
        console.print(f"[dim]skipped {shown(line)}[/]")
