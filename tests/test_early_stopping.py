"""--patience: a run stops after N epochs without a better validation top-1, its count carried
across a resume (from last.pt's progress), and a run that stopped early is not resumed into
stopping again. Validation top-1 is scripted per epoch, so the tests do not hang on what tiny
data happens to learn."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pandas as pd
import pytest

import cifarnet.training.trainer as trainer_mod
from cifarnet.config.settings import TrainConfig
from cifarnet.errors import ConfigError, TrainingInterrupted
from cifarnet.io.checkpoint import load_checkpoint
from cifarnet.training.early_stopping import epochs_without_improvement, stopped_early
from cifarnet.training.state import Progress
from cifarnet.training.trainer import TrainCallbacks, train


class ScriptedValidation(TrainCallbacks):
    """Makes epoch E's validation top-1 `tops[E]` (the test pass is left as measured), and
    sends SIGINT after step `interrupt_at` = (epoch, step) when given."""

    def __init__(self, tops: dict[int, float], interrupt_at: tuple[int, int] | None = None):
        self.tops, self.interrupt_at = tops, interrupt_at
        self.epoch: int | None = None

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int, steps: int, stats: dict) -> None:
        if (self.epoch, step) == self.interrupt_at:
            signal.raise_signal(signal.SIGINT)

    def on_epoch_end(self, row: dict) -> None:
        self.epoch = None


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    """A ScriptedValidation maker whose scripts the trainer's evaluation pass follows."""
    real = trainer_mod.evaluate
    current: list[ScriptedValidation] = []

    def evaluate(*args, **kwargs):
        result = real(*args, **kwargs)
        script = current[-1]
        if script.epoch is None:  # the test-set pass
            return result
        return dataclasses.replace(result, top1=script.tops[script.epoch])

    monkeypatch.setattr(trainer_mod, "evaluate", evaluate)

    def make(tops: dict[int, float], interrupt_at: tuple[int, int] | None = None):
        current.append(ScriptedValidation(tops, interrupt_at))
        return current[-1]

    return make


def _short(tiny_config: TrainConfig, **changes: object) -> TrainConfig:
    """64 training images in batches of 32 (2 steps per epoch), 20 for validation."""
    return tiny_config.replace(**{"subset": 64, "batch_size": 32, "val_size": 20, **changes})


# epoch 2 is the best; none after it is better
TOPS = {1: 10.0, 2: 20.0, 3: 15.0, 4: 20.0, 5: 5.0, 6: 30.0, 7: 40.0, 8: 50.0}


def test_counter_is_epochs_since_the_best() -> None:
    progress = Progress(epoch=5, best_epoch=2)
    assert epochs_without_improvement(progress) == 3
    config = TrainConfig(patience=3)
    assert stopped_early(progress, config)
    assert not stopped_early(Progress(epoch=5, best_epoch=3), config)
    assert not stopped_early(progress, TrainConfig())  # no --patience
    # saved in the middle of an epoch: that epoch is finished first
    assert not stopped_early(Progress(epoch=5, best_epoch=2, step_in_epoch=1), config)


def test_run_stops_after_patience_epochs_without_improvement(
    tiny_config: TrainConfig, scripted
) -> None:
    summary = train(_short(tiny_config, epochs=8, patience=3), callbacks=scripted(TOPS))
    run = Path(summary["run_dir"])
    assert summary["epochs"] == 5 and summary["stopped_early"] is True
    assert summary["best_epoch"] == 2 and summary["best_val_top1"] == 20.0
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert load_checkpoint(run / "best.pt")["progress"]["epoch"] == 2
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 5
    with pytest.raises(ConfigError, match=r"stopped early after epoch 5.*--patience N \(N > 3\)"):
        train(resume=run / "last.pt", overrides={"epochs": 20})
    # more patience: trains on, and stops on the new count (epochs 6-8 are each better)
    summary = train(resume=run / "last.pt", overrides={"patience": 4}, callbacks=scripted(TOPS))
    assert summary["epochs"] == 8 and summary["stopped_early"] is False


@pytest.mark.parametrize("patience", [None, 3], ids=["no-patience", "spent-at-the-last-epoch"])
def test_a_run_that_reaches_its_length_did_not_stop_early(
    tiny_config: TrainConfig, scripted, patience: int | None
) -> None:
    summary = train(_short(tiny_config, epochs=5, patience=patience), callbacks=scripted(TOPS))
    assert summary["epochs"] == 5 and summary["stopped_early"] is False


def test_the_count_carries_across_a_resume(tiny_config: TrainConfig, scripted) -> None:
    """Stopped by its epochs at epoch 4 (2 epochs without improvement), then extended: the
    count goes on from last.pt and the run stops after epoch 5, as one run would have."""
    config = _short(tiny_config, epochs=4, patience=3)
    run = Path(train(config, callbacks=scripted(TOPS))["run_dir"])
    assert load_checkpoint(run / "last.pt")["progress"]["best_epoch"] == 2
    summary = train(resume=run / "last.pt", overrides={"epochs": 8}, callbacks=scripted(TOPS))
    assert summary["epochs"] == 5 and summary["stopped_early"] is True


def test_interrupted_mid_epoch_then_resumed_stops_where_one_run_does(
    tiny_config: TrainConfig, scripted
) -> None:
    config = _short(tiny_config, epochs=8, patience=3)
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=scripted(TOPS, interrupt_at=(5, 1)))
    run = Path(config.runs_dir) / "train"
    progress = load_checkpoint(run / "last.pt")["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (4, 1)
    summary = train(resume=run / "last.pt", callbacks=scripted(TOPS))
    assert summary["epochs"] == 5 and summary["stopped_early"] is True
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3, 4, 5]
