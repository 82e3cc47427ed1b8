"""torch.compile with fixed shapes: the compiled forms see only the shapes warmed up before the
timed loop, and the warm-up's seconds are reported apart from the training time. The shape
logic is tested with a recording stand-in for torch.compile (compiling is slow on a CPU)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from cifarnet.training import compiling
from cifarnet.training.compiling import pad_batch, training_sides


class ShapeRecorder(nn.Module):
    """Stands in for a compiled module: records each call's (shape, training, grad mode) and
    sleeps on the first call of each, as compiling would."""

    calls: ClassVar[list[tuple]] = []
    compile_sleep: ClassVar[float] = 0.0

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.seen: set[tuple] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), self.training, torch.is_grad_enabled(), x.stride())
        if key not in self.seen:
            self.seen.add(key)
            time.sleep(self.compile_sleep)
        ShapeRecorder.calls.append(key)
        return self.inner(x)


def _recorded_run(tiny_config, monkeypatch, sleep=0.0, **overrides):
    from cifarnet.training.trainer import train

    ShapeRecorder.calls, ShapeRecorder.compile_sleep = [], sleep
    warm: list[int] = []
    real_warm_up = compiling.warm_up

    def counting_warm_up(*args, **kwargs):
        seconds = real_warm_up(*args, **kwargs)
        warm.append(len(ShapeRecorder.calls))
        return seconds

    monkeypatch.setattr("cifarnet.training.setup.compile_model", ShapeRecorder)
    monkeypatch.setattr(compiling, "warm_up", counting_warm_up)
    summary = train(tiny_config.replace(compile=True, **overrides))
    return summary, ShapeRecorder.calls[: warm[0]], ShapeRecorder.calls[warm[0] :]


def test_training_sides_are_the_progressive_resizing_sizes() -> None:
    assert training_sides(32) == [32]
    assert training_sides(24) == [24, 28, 32]
    assert training_sides(26) == [24, 28, 32]


def test_pad_batch_keeps_the_memory_format_and_the_rows() -> None:
    x = torch.randn(3, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    padded = pad_batch(x, 5)
    assert padded.shape == (5, 3, 8, 8)
    assert padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[:3], x) and not padded[3:].any()
    assert pad_batch(x, 3) is x


def test_a_compiled_run_sees_only_the_shapes_it_warmed_up(tiny_config, monkeypatch) -> None:
    # 400 training images in batches of 64 (a partial last batch), 100 validation and 1000
    # test images in batches of 128 (partial last batches), three resizing sides
    summary, warm, timed = _recorded_run(tiny_config, monkeypatch, resize_from=24)
    assert set(timed) <= set(warm), set(timed) - set(warm)
    train_shapes = {shape for shape, training, _, _ in timed if training}
    assert {s[0] for s in train_shapes} == {64}  # the partial training batch is dropped
    assert {s[-1] for s in train_shapes} == {24, 28, 32}
    eval_shapes = {shape for shape, training, grad, _ in timed if not training}
    assert eval_shapes == {(128, 3, 32, 32)}  # evaluation batches padded
    assert summary["compile_seconds"] > 0


def test_evaluate_pads_and_masks() -> None:
    from cifarnet.runtime.device import Runtime
    from cifarnet.training.step import evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    batches = [(torch.randn(n, 3, 2, 2), torch.randint(0, 10, (n,))) for n in (4, 3)]
    rt = Runtime(torch.device("cpu"), "fp32", False)
    plain = evaluate(model, batches, rt, keep_logits=True)
    padded = evaluate(model, batches, rt, keep_logits=True, pad_to=4)
    assert padded.count == plain.count == 7
    assert torch.allclose(padded.logits, plain.logits)
    assert padded.loss == plain.loss and padded.top1 == plain.top1


def test_compile_time_is_not_step_time(tiny_config, monkeypatch) -> None:
    # each new shape "compiles" for 1.5 s: all of that in compile_seconds, none in the loop's
    # time (which --time's warm-up fraction, resizing and stop prediction are read from)
    summary, _, _ = _recorded_run(tiny_config, monkeypatch, sleep=1.5, resize_from=24)
    assert summary["compile_seconds"] >= 4 * 1.5
    run = Path(summary["run_dir"])
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["progress"]["last_step_seconds"] < 1.5
    assert json.loads((run / "summary.json").read_text())["compile_seconds"] >= 6


def test_warm_up_leaves_the_model_and_random_state_as_they_were() -> None:
    from cifarnet.config.settings import TrainConfig
    from cifarnet.runtime.device import Runtime

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    config = TrainConfig(batch_size=4, eval_batch_size=6, resize_from=24, compile=True)
    seconds = compiling.warm_up(
        model, model, model, Runtime(torch.device("cpu"), "fp32", False), config
    )
    assert seconds >= 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
