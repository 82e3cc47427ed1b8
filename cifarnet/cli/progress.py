"""Progress display. Training: a rich progress bar per epoch on a terminal, one plain line per
epoch otherwise (or with --quiet), and a summary table at the end. Evaluate and predict: a
transient counting bar on a terminal (`counting_bar`)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cifarnet.cli.render import shown
from cifarnet.training.trainer import TrainCallbacks


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    minutes, sec = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MiB"


def _loss(value: float | None) -> str:
    """A loss to 4 decimals; "-" where there is none (no validation split)."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


class PlainCallbacks(TrainCallbacks):
    """One line per epoch: for logs, pipes and --quiet."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.info: dict[str, Any] = {}

    def on_start(self, info: dict[str, Any]) -> None:
        self.info = info
        budget = (
            f"{info['time_minutes']:g} min budget"
            if info["time_minutes"]
            else f"{info['epochs']} epoch{'s' if info['epochs'] != 1 else ''}"
        )
        self.console.print(
            f"run {shown(info['run_dir'])}: {shown(info['model'])} "
            f"({info['parameters']:,} params), "
            f"{info['train_images']:,} train / {info['val_images']:,} val images, {budget}, "
            f"{info['device']} {info['precision']}"
            f"{' channels_last' if info['channels_last'] else ''}"
            f"{' compiled' if info['compile'] else ''}"
        )

    def on_status(self, message: str) -> None:
        self.console.print(f"{shown(message)} ...")

    def close(self) -> None:
        """Release the terminal however training ended (nothing to release here)."""

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self.console.print(self._epoch_line(row))

    def _epoch_line(self, row: dict[str, Any]) -> str:
        """One finished epoch, the same in a log and above a terminal's progress bar."""
        total = "" if self.info.get("time_minutes") else f"/{self.info.get('epochs')}"
        return (
            f"epoch {row['epoch']}{total}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f}"
            f" top1 {_pct(row['train_top1'])}  val loss {_loss(row['val_loss'])}"
            f" top1 {_pct(row['val_top1'])} top5 {_pct(row['val_top5'])}"
            f"  {row['images_per_second']:.0f} img/s  {row['epoch_seconds']:.1f}s"
        )

    def on_end(self, summary: dict[str, Any]) -> None:
        self.console.print(summary_table(summary))


class RichCallbacks(PlainCallbacks):
    """A live progress bar per epoch (loss, accuracy, images/s, ETA for the whole run)."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("run ETA {task.fields[eta]}"),
            console=console,
            transient=True,
        )
        self.task: Any = None
        self.test_task: Any = None
        self.run_start = time.perf_counter()

    def on_start(self, info: dict[str, Any]) -> None:
        super().on_start(info)
        self.run_start = time.perf_counter()
        self.progress.start()

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch
        total = "" if self.info.get("time_minutes") else f"/{self.info['epochs']}"
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}{total}", total=steps, stats="", eta="?")

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        if self.info.get("time_minutes"):
            remaining = self.info["time_minutes"] * 60 - stats["elapsed_seconds"]
        else:
            done = (self.epoch - self.info["start_epoch"]) * steps + step
            left = (self.info["epochs"] - self.epoch) * steps + (steps - step)
            elapsed = time.perf_counter() - self.run_start
            remaining = elapsed / max(done, 1) * left
        self.progress.update(
            self.task,
            completed=step,
            eta=_fmt_duration(remaining),
            stats=f"loss {stats['loss']:.3f} top1 {stats['top1']:.1f}% "
            f"{stats['images_per_second']:.0f} img/s",
        )

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.console.print(self._epoch_line(row))

    def on_status(self, message: str) -> None:
        self.progress.console.print(f"[dim]{shown(message)} ...[/]")

    def on_test_progress(self, images_done: int, images: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if self.test_task is None:
            self.test_task = self.progress.add_task("test", total=images, stats="", eta="-")
        self.progress.update(self.test_task, completed=images_done, total=images)

    def on_end(self, summary: dict[str, Any]) -> None:
        self.progress.stop()
        super().on_end(summary)

    def close(self) -> None:
        """Stop the live display (it hides the cursor) when training ends in an error or an
        interrupt, before the error line is printed; a no-op after on_end."""
        self.progress.stop()


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"run {shown(summary['run_dir'])}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("test top-1", _pct(summary["test_top1"])),
        ("test top-5", _pct(summary["test_top5"])),
        ("test loss", _loss(summary["test_loss"])),
        ("best val top-1", _pct(summary["best_val_top1"])),
        ("best epoch", str(summary["best_epoch"])),
        (
            "epochs",
            f"{summary['epochs']}{' (stopped early)' if summary.get('stopped_early') else ''}",
        ),
        ("training time", _fmt_duration(summary["train_seconds"])),
        ("train images/s", f"{summary['train_images_per_second']:.0f}"),
        ("peak memory", _mib(summary["peak_memory_mb"])),
    ]
    if summary.get("compile_seconds"):
        rows.insert(7, ("compile time", _fmt_duration(summary["compile_seconds"])))
    for key, value in rows:
        table.add_row(key, value)
    return table


@contextlib.contextmanager
def counting_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transient progress bar fed by `update(done, total)` on a terminal; None elsewhere
    (logs and pipes get no bar). The bar appears at the first update, so what runs before it
    (loading, a download with its own progress output) prints as usual; it is removed however
    the block ends."""
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: list[Any] = []

    def update(done: int, total: int) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task(description, total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()


def make_train_callbacks(console: Console, quiet: bool) -> PlainCallbacks:
    if quiet or not console.is_terminal:
        return PlainCallbacks(console)
    return RichCallbacks(console)
