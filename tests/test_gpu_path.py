"""What the GPU path relies on, tested on the CPU: resuming a mid-epoch last.pt saved on another
device type, the weight average without a per-step copy of its counter, cuDNN's autotuning,
the checkpoint save interval and benchmark's batch size per device."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from cifarnet.errors import TrainingInterrupted
from cifarnet.io.checkpoint import load_checkpoint, save_checkpoint
from cifarnet.runtime.device import Runtime, tune_backends
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.ema import Ema
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


def test_ema_matches_averaged_model_and_keeps_its_counter_on_the_cpu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ours = Ema(model, 0.9)
    theirs = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True
    )
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 4))  # moves the BatchNorm statistics
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].double(), b[k].double()) for k in a)
    assert ours.n_averaged.device.type == "cpu" and ours.n_averaged.item() == 4


def test_ema_update_copies_no_counter_to_the_device(monkeypatch) -> None:
    model = nn.Linear(2, 2)
    ema = Ema(model, 0.5)
    ema.update_parameters(model)
    moved: list[torch.device] = []
    real_to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        if self is ema.n_averaged:
            moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    ema.update_parameters(model)
    assert moved == []


def test_cudnn_autotuning_is_on_for_cuda_unless_deterministic() -> None:
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        tune_backends(Runtime(torch.device("cpu"), "fp32", False))
        assert torch.backends.cudnn.benchmark is False
        tune_backends(Runtime(torch.device("cuda"), "bf16", True))
        assert torch.backends.cudnn.benchmark is True
        tune_backends(Runtime(torch.device("cuda"), "bf16", True), deterministic=True)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


class CountSaves(TrainCallbacks):
    """Records, at each epoch's end, which epoch last.pt and best.pt hold."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int | None, int | None]] = []

    def on_start(self, info: dict) -> None:
        self.run = Path(info["run_dir"])

    def on_epoch_end(self, row: dict) -> None:
        held = []
        for name in ("last.pt", "best.pt"):
            path = self.run / name
            held.append(load_checkpoint(path)["progress"]["epoch"] if path.exists() else None)
        self.seen.append((row["epoch"], *held))


def test_save_every_writes_checkpoints_every_n_epochs_and_at_the_end(tiny_config) -> None:
    counter = CountSaves()
    summary = train(tiny_config.replace(epochs=5, save_every=2, val_size=0), callbacks=counter)
    # without validation every epoch is the best: best.pt follows last.pt
    assert counter.seen == [(1, None, None), (2, 2, 2), (3, 2, 2), (4, 4, 4), (5, 5, 5)]
    assert summary["epochs"] == 5


def test_save_every_still_saves_on_a_stop_signal(tiny_config) -> None:
    config = tiny_config.replace(epochs=4, save_every=3, name="stop")
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=StopAt(2, 1))
    run = Path(config.runs_dir) / "stop"
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 1
    assert load_checkpoint(run / "best.pt")["progress"]["epoch"] == 1
    summary = train(resume=run / "last.pt")
    assert summary["epochs"] == 4


def test_save_every_must_be_a_positive_integer(tiny_config) -> None:
    from cifarnet.errors import ConfigError

    with pytest.raises(ConfigError, match="--save-every must be a positive integer"):
        tiny_config.replace(save_every=0)


def test_benchmark_batch_size_defaults_larger_on_a_gpu() -> None:
    from cifarnet.tasks.benchmarking import default_batch_size

    assert default_batch_size(torch.device("cpu")) == 256
    assert default_batch_size(torch.device("cuda")) == 1024
