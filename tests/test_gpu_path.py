"""What the GPU path relies on, tested on the CPU: resuming a mid-epoch last.pt saved on another
device type."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from cifarnet.errors import TrainingInterrupted
from cifarnet.io.checkpoint import load_checkpoint, save_checkpoint
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.trainer import train


class StopAt(TrainCallbacks):
    """Sends SIGINT after step `step` of epoch `epoch`."""

    def __init__(self, epoch: int, step: int) -> None:
        self.at, self.epoch = (epoch, step), 0

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        if (self.epoch, step) == self.at:
            signal.raise_signal(signal.SIGINT)


def _stopped_mid_epoch(tiny_config) -> Path:
    config = tiny_config.replace(batch_size=32, subset=128, name="cut")
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=StopAt(2, 2))
    return Path(config.runs_dir) / "cut" / "last.pt"


@pytest.mark.parametrize("labelled", [True, False], ids=["device-recorded", "older-file"])
def test_a_mid_epoch_last_pt_from_another_device_type_resumes(tiny_config, labelled) -> None:
    last = _stopped_mid_epoch(tiny_config)
    ckpt = load_checkpoint(last)
    data = ckpt["rng"]["data"]
    assert data["device"] == "cpu"
    # what a CUDA generator saves: 16 bytes (seed, offset), not a CPU generator's 5056
    data["generator"] = torch.zeros(16, dtype=torch.uint8)
    if labelled:
        data["device"] = "cuda"
    else:
        del data["device"]
    save_checkpoint(ckpt, last)
    summary = train(resume=last)
    assert summary["epochs"] == 2
    metrics = pd.read_csv(last.parent / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and metrics["train_images"].iloc[1] == 128
