"""TensorBoard logging (`--tensorboard`): event files in the run folder, written by a
TrainCallbacks implementation composed with the caller's callbacks, so the loop knows nothing of
it. `tensorboard --logdir runs` shows every run side by side.

Scalars: each metrics.csv column per epoch (tags below, x axis the epoch), the lr per step
(`lr/step`, x axis the global step: every step on the CPU, every 25th on a GPU, as `on_step` is
told), the test figures at the end; the model graph once, when a run starts from epoch 1.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from cifarnet.errors import CifarnetWarning, ConfigError
from cifarnet.training.callbacks import TrainCallbacks

# metrics.csv column -> TensorBoard tag
EPOCH_TAGS = {
    "lr": "lr/epoch",
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_top1": "top1/train",
    "val_top1": "top1/val",
    "val_top5": "top5/val",
    "train_images": "data/train_images",
    "epoch_seconds": "time/epoch_seconds",
    "elapsed_seconds": "time/elapsed_seconds",
    "images_per_second": "speed/images_per_second",
}
SUMMARY_TAGS = {"test_top1": "test/top1", "test_top5": "test/top5", "test_loss": "test/loss"}
INSTALL_HINT = "pip install 'cifarnet[tensorboard]'"


class ComposedCallbacks(TrainCallbacks):
    """Several callbacks told the same, in order."""

    def __init__(self, *parts: TrainCallbacks) -> None:
        self.parts = parts

    def on_start(self, info: dict[str, Any]) -> None:
        for part in self.parts:
            part.on_start(info)

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        for part in self.parts:
            part.on_epoch_start(epoch, steps)

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        for part in self.parts:
            part.on_step(step, steps, stats)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        for part in self.parts:
            part.on_epoch_end(row)

    def on_status(self, message: str) -> None:
        for part in self.parts:
            part.on_status(message)

    def on_end(self, summary: dict[str, Any]) -> None:
        for part in self.parts:
            part.on_end(summary)


def check_tensorboard() -> None:
    """ConfigError when TensorBoard's writer cannot be imported."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None


def with_tensorboard(callbacks: TrainCallbacks, config: Any) -> TrainCallbacks:
    """`callbacks`, plus TensorBoard logging when `config.tensorboard` is on."""
    if not getattr(config, "tensorboard", False):
        return callbacks
    check_tensorboard()
    return ComposedCallbacks(callbacks, TensorBoardCallbacks())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardCallbacks(TrainCallbacks):
    """Writes the run's event files into its folder (told by `on_start`)."""

    def __init__(self, graph: bool = True) -> None:
        self.writer: Any = None
        self.graph = graph
        self.epoch, self.steps = 1, 1

    def on_start(self, info: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(info["run_dir"])
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=30)
        if self.graph and info.get("start_epoch", 1) == 1:
            self._add_graph(folder)

    def _add_graph(self, folder: Path) -> None:
        """The network rebuilt from config.json, traced once on a blank batch; a model that
        cannot be traced costs a warning, never the run."""
        try:
            import torch

            from cifarnet.data.datasets import get_spec
            from cifarnet.models import create_model

            config = json.loads((folder / "config.json").read_text())
            classes = get_spec(config["dataset"]).num_classes
            model = create_model(config["model"], classes, **config.get("model_kwargs", {}))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings
                self.writer.add_graph(model.eval(), torch.zeros(1, 3, 32, 32))
        except Exception as exc:  # the graph is a nicety, never worth the run
            warnings.warn(
                f"TensorBoard: the model graph was not written ({exc})",
                CifarnetWarning,
                stacklevel=1,
            )

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, max(steps, 1)

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        if self.writer is not None and _finite(stats.get("lr")):
            global_step = (self.epoch - 1) * self.steps + step
            self.writer.add_scalar("lr/step", stats["lr"], global_step)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for column, tag in EPOCH_TAGS.items():
            if _finite(row.get(column)):
                self.writer.add_scalar(tag, row[column], row["epoch"])
        self.writer.flush()  # a run stopped later keeps its epochs

    def on_end(self, summary: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, tag in SUMMARY_TAGS.items():
            if _finite(summary.get(key)):
                self.writer.add_scalar(tag, summary[key], summary.get("epochs") or 0)
        self.writer.close()
        self.writer = None
