"""Tests that need a CUDA GPU (skipped without one): bf16 + channels_last training, eager and
compiled; a real out-of-memory; a CUDA-trained checkpoint used on the CPU; interrupt and resume
on the GPU; the data path staying on the GPU without host synchronisation."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.errors import TrainingInterrupted
from cifarnet.io.checkpoint import load_checkpoint
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
runner = CliRunner()

# the tolerance of a resumed run against the uninterrupted one on CUDA: cuDNN's kernels may
# sum in another order between processes, even with --deterministic
RESUME_ATOL = 1e-3


class StopAt(TrainCallbacks):
    def __init__(self, epoch: int, step: int) -> None:
        self.at, self.epoch = (epoch, step), 0

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        if (self.epoch, step) == self.at:
            signal.raise_signal(signal.SIGINT)


def _cuda(tiny_config, **overrides):
    return tiny_config.replace(device="cuda", precision="auto", compile=False, **overrides)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bf16_channels_last_training_on_cuda(tiny_config, compiled) -> None:
    summary = train(_cuda(tiny_config, compile=compiled, resize_from=24, name=f"c{compiled}"))
    meta = load_checkpoint(Path(summary["run_dir"]) / "last.pt")
    assert summary["device"].startswith("cuda") and summary["precision"] == "bf16"
    assert torch.isfinite(torch.tensor(summary["test_loss"]))
    assert meta["state_dict"]  # saved from the GPU to CPU tensors
    assert all(t.device.type == "cpu" for t in meta["state_dict"].values())
    if compiled:
        # every shape was compiled before the loop: the loop itself is fast
        assert summary["compile_seconds"] > summary["train_seconds"]
    else:
        assert summary["compile_seconds"] == 0


def test_a_real_cuda_out_of_memory_gets_the_one_line_advice() -> None:
    result = runner.invoke(
        app,
        [
            "benchmark",
            "--model",
            "resnet_reference",
            "--device",
            "cuda",
            "--batch-size",
            str(2**22),
            "--seconds",
            "0.1",
            "--no-onnx",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "out of memory" in result.output and "Traceback" not in result.output
    assert "--batch-size" in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "out of memory" in error[0], result.output


def test_a_cuda_checkpoint_evaluates_predicts_and_exports_on_the_cpu(
    tiny_config, cifar100_dir, tmp_path
) -> None:
    from PIL import Image

    best = Path(train(_cuda(tiny_config, epochs=1))["run_dir"]) / "best.pt"
    cpu = ["--device", "cpu"]
    result = runner.invoke(app, ["evaluate", str(best), "--data-dir", str(cifar100_dir), *cpu])
    assert result.exit_code == 0, result.output
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(photos / "a.png")
    out = tmp_path / "p.csv"
    args = ["predict", str(photos), "--model", str(best), *cpu, "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 1
    args = ["export", str(best), "--torchscript", "--out", str(tmp_path / "m.pt")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def _weights_close(a: Path, b: Path, atol: float) -> None:
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    for key in sa:
        delta = (sa[key].double() - sb[key].double()).abs().max().item()
        assert delta <= atol, f"{key}: max |delta| {delta}"


def test_interrupt_and_resume_on_cuda_matches_the_uninterrupted_run(tiny_config) -> None:
    config = _cuda(
        tiny_config, epochs=3, batch_size=32, subset=96, precision="fp32", deterministic=True
    )
    whole = Path(train(config.replace(name="whole"))["run_dir"])
    with pytest.raises(TrainingInterrupted):
        train(config.replace(name="cut"), callbacks=StopAt(2, 1))
    cut = whole.parent / "cut"
    assert load_checkpoint(cut / "last.pt")["rng"]["data"]["device"] == "cuda"
    train(resume=cut / "last.pt")
    _weights_close(whole / "last.pt", cut / "last.pt", RESUME_ATOL)
    ma, mb = pd.read_csv(whole / "metrics.csv"), pd.read_csv(cut / "metrics.csv")
    for column in ("train_loss", "val_loss"):
        assert (ma[column] - mb[column]).abs().max() <= 10 * RESUME_ATOL


def test_a_mid_epoch_cuda_last_pt_resumes_on_the_cpu(tiny_config) -> None:
    config = _cuda(tiny_config, batch_size=32, subset=128, name="moved")
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=StopAt(2, 2))
    last = Path(config.runs_dir) / "moved" / "last.pt"
    summary = train(resume=last, overrides={"device": "cpu", "precision": "fp32"})
    assert summary["epochs"] == 2 and summary["device"] == "cpu"


def test_the_data_path_stays_on_the_gpu_without_host_syncs() -> None:
    from cifarnet.data.augment import Augment, Normalize, resize_batch
    from cifarnet.data.loader import BatchLoader

    dev = torch.device("cuda")
    images = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, device=dev)
    labels = torch.randint(0, 100, (512,), device=dev)
    normalize = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), dev, channels_last=True)
    loader = BatchLoader(
        images, labels, 128, normalize, Augment(4, True, 8), shuffle=True, drop_last=True
    )
    generator = torch.Generator(device=dev)
    generator.manual_seed(0)
    order = loader.epoch_order(generator)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
    try:
        for x, y in loader.batches(generator, order):
            x = resize_batch(x, 24)
            assert x.device.type == "cuda" and y.device.type == "cuda"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_ema_update_does_not_synchronise() -> None:
    from torch import nn

    from cifarnet.training.ema import Ema

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).cuda()
    ema = Ema(model, 0.99)
    ema.update_parameters(model)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            ema.update_parameters(model)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ema.n_averaged.item() == 4
