"""What a run reports: the start info for `on_start`, config.json's "_meta" block, an epoch's
metrics row (metrics.csv's columns), summary.json's numbers and the message of a stop by a
signal. Plain dicts and strings built from the run's parts; no I/O."""

from __future__ import annotations

import shlex
from typing import Any

from cifarnet.config.settings import TrainConfig
from cifarnet.io.run_folder import RunPaths
from cifarnet.runtime.device import Runtime, peak_memory_mb
from cifarnet.training.early_stopping import ended_by_patience
from cifarnet.training.setup import TrainData
from cifarnet.training.signals import signal_name
from cifarnet.training.state import EpochSums, Progress
from cifarnet.training.step import EvalResult


def config_meta(
    runtime: Runtime, compiled: bool, data: TrainData, parameters: int
) -> dict[str, Any]:
    """config.json's "_meta" entries after the versions and the command line."""
    return {
        "device": str(runtime.device),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "compile": compiled,
        "data_source": data.source,
        "train_images": data.train_count,
        "val_images": data.val_count,
        "parameters": parameters,
    }


def start_info(
    config: TrainConfig,
    runtime: Runtime,
    paths: RunPaths,
    parameters: int,
    compiled: bool,
    data: TrainData,
    progress: Progress,
) -> dict[str, Any]:
    """What `on_start` is told of the run."""
    return {
        "run_dir": str(paths.folder),
        "model": config.model,
        "parameters": parameters,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "channels_last": runtime.channels_last,
        "compile": compiled,
        "train_images": data.train_count,
        "val_images": data.val_count,
        "epochs": config.epochs,
        "time_minutes": config.time_minutes,
        "start_epoch": progress.epoch + 1,
    }


def epoch_row(
    epoch: int,
    lr: float,
    train_stats: tuple[float, float],
    val: EvalResult | None,
    sums: EpochSums,
    end_seconds: float,
) -> dict[str, Any]:
    """An epoch's metrics row, less its elapsed_seconds (known once the epoch is recorded).
    `train_stats`: (mean loss, top-1 %); `end_seconds`: the epoch's ending so far (validation)."""
    nan = float("nan")
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_stats[0],
        "train_top1": train_stats[1],
        "val_loss": val.loss if val is not None else nan,
        "val_top1": val.top1 if val is not None else nan,
        "val_top5": val.top5 if val is not None else nan,
        "train_images": sums.count,
        "epoch_seconds": sums.seconds + end_seconds,
        "images_per_second": sums.count / max(sums.seconds, 1e-9),
    }


def run_summary(
    config: TrainConfig,
    runtime: Runtime,
    paths: RunPaths,
    parameters: int,
    progress: Progress,
    history: list[dict[str, Any]],
    validated: bool,
    test: EvalResult,
    test_seconds: float,
) -> dict[str, Any]:
    """summary.json: the run's settings in brief, its test numbers and its speed. `validated`:
    whether the run held out a validation split."""
    c, p = config, progress
    train_images = sum(r["train_images"] for r in history)
    train_time = sum(
        r["images_per_second"] and r["train_images"] / r["images_per_second"] for r in history
    )
    return {
        "run_dir": str(paths.folder),
        "dataset": c.dataset,
        "recipe": c.recipe,
        "model": c.model,
        "parameters": parameters,
        "device": str(runtime.device),
        "precision": runtime.precision,
        "epochs": p.epoch,
        "stopped_early": ended_by_patience(p, c),
        "time_budget_minutes": c.time_minutes,
        "test_top1": test.top1,
        "test_top5": test.top5,
        "test_loss": test.loss,
        "best_epoch": p.best_epoch,
        "best_val_top1": p.best_val_top1 if validated else None,
        "train_seconds": p.elapsed_seconds,
        "compile_seconds": p.compile_seconds,
        "train_images_per_second": train_images / max(train_time, 1e-9),
        "test_images_per_second": test.count / max(test_seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(runtime.device),
    }


def stop_message(
    signum: int, progress: Progress, paths: RunPaths, mid_epoch: bool, finished: bool
) -> str:
    """What a run stopped by `signum` says, last.pt saved: how to resume it or, stopped after
    its last epoch (`finished`), how to run the test-set evaluation it skipped."""
    name = signal_name(signum)
    if not mid_epoch and finished:
        # nothing is left to resume: `--resume` would only say the run is complete
        return (
            f"stopped by {name} after the last epoch ({progress.epoch}); best.pt and "
            "last.pt are complete, the test-set evaluation was skipped. Run it with: "
            f"cifarnet evaluate {shlex.quote(str(paths.best))}"
        )
    return (
        f"stopped by {name} at epoch {progress.epoch + (1 if mid_epoch else 0)}"
        f"{f', step {progress.step_in_epoch}' if mid_epoch else ''}; saved "
        f"{paths.last}. Resume with: cifarnet train --resume "
        f"{shlex.quote(str(paths.last))}"
    )
