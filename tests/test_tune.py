"""`cifarnet tune`: the search space checked before any training, a tiny 3-trial study with a
pruned trial, interrupted by Ctrl-C and resumed without repeating its finished trials."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.config.settings import resolve_config
from cifarnet.errors import ConfigError
from cifarnet.tasks.tune import build_space, read_space_file
from cifarnet.training.callbacks import TrainCallbacks
from tests.conftest import TINY_MODEL

optuna = pytest.importorskip("optuna")


def test_space_from_flags_and_yaml(tiny_config, tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 0.01, high: 0.4, log: true}\nbatch_size: [32, 64]\ncutout: '0:8'\n")
    space = build_space(tiny_config, read_space_file(path), ["weight_decay=1e-5:1e-3:log"])
    kinds = {p.name: (p.kind, p.log) for p in space}
    assert kinds == {
        "lr": ("float", True),
        "batch_size": ("choice", False),
        "cutout": ("int", False),
        "weight_decay": ("float", True),
    }


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("weight_decy=0:1", "unknown setting 'weight_decy' (did you mean 'weight_decay'?)"),
        ("lr=0.4:0.1", "low 0.4 must be below high 0.1"),
        ("lr=0:0.1:log", "a log range needs low > 0"),
        ("label_smoothing=0:1", "label_smoothing=1"),  # the setting's own rule: [0, 1)
        ("seed=0:5", "seed cannot be searched"),
        ("schedule=0:1", "give choices, not a range"),
        ("batch_size=64", "2+ choices"),
        ("lr", "NAME=LOW:HIGH"),
    ],
)
def test_bad_space_refused(tiny_config, flag: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_space(tiny_config, None, [flag])


def _flags(cifar100_dir: Path, tmp_path: Path) -> list[str]:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_MODEL, "batch_size": 64}))
    return ["tune", "--config", str(config), "--data-dir", str(cifar100_dir), "--epochs", "1"]


def test_bad_input_is_one_line_before_training(cifar100_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    flags = [*_flags(cifar100_dir, tmp_path), "--runs-dir", str(runs), "--no-download"]
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": [0.1, 0.2], "momentun": {"low": 0.8, "high": 0.9}}))
    cases = [
        (["--space", str(space)], "unknown setting 'momentun'"),
        (["--search", "lr=0.1:0.2", "--storage", "nosuchdb://x"], "cannot open the study storage"),
        (["--search", "lr=0.1:0.2", "--val-size", "0"], "validation top-1"),
    ]
    for extra, message in cases:
        result = CliRunner().invoke(app, [*flags, *extra])
        assert result.exit_code == 1, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not runs.exists()


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prunes trial 1 at its first report, so pruning is exercised on tiny data."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


class CtrlCInTrial(TrainCallbacks):
    """Sends SIGINT when the trial's first epoch starts, as Ctrl-C would."""

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_tiny_study_pruned_interrupted_and_resumed(tiny_config) -> None:
    from cifarnet.tasks.tune import tune

    base = tiny_config.replace(epochs=2)
    space = build_space(base, {"lr": {"low": 0.05, "high": 0.2, "log": True}})
    trained: list[int] = []

    def callbacks_for(number: int, values: dict) -> TrainCallbacks:
        trained.append(number)
        return CtrlCInTrial() if number == 2 else TrainCallbacks()

    first = tune(base, space, trials=3, study_name="s", pruner=PruneTrialOne(),
                 callbacks_for=callbacks_for)  # fmt: skip
    assert first.interrupted and first.ran == 2 and trained == [0, 1, 2]
    assert next(r for r in first.rows if r["trial"] == 0)["lr"] == base.lr  # the baseline
    states = {r["trial"]: r["state"] for r in first.rows}
    assert states == {0: "complete", 1: "pruned", 2: "fail"}
    folder = Path(base.runs_dir) / "s"
    assert (folder / "trial-0000" / "summary.json").is_file()
    assert not (folder / "trial-0001" / "summary.json").exists()  # pruned after epoch 1
    assert (folder / "trial-0002" / "last.pt").is_file()  # stopped at a safe point

    second = tune(base, space, trials=3, study_name="s", pruner=PruneTrialOne(),
                  callbacks_for=callbacks_for)  # fmt: skip
    assert not second.interrupted and second.ran == 1 and trained == [0, 1, 2, 3]
    finished = [r for r in second.rows if r["state"] in ("complete", "pruned")]
    assert sorted(r["trial"] for r in finished) == [0, 1, 3]
    best = max((r for r in second.rows if r["state"] == "complete"), key=lambda r: r["val_top1"])
    assert second.best["trial"] == best["trial"]
    summary = json.loads((folder / best["run"] / "summary.json").read_text())
    assert best["val_top1"] == pytest.approx(summary["best_val_top1"])  # validation, not test
    config = resolve_config({}, second.best_config)
    assert config.lr == pytest.approx(best["lr"]) and config.name is None
    assert (folder / "trials.csv").is_file() and (folder / "study.json").is_file()
    third = tune(base, space, trials=3, study_name="s", pruner=PruneTrialOne(),
                 callbacks_for=callbacks_for)  # fmt: skip
    assert third.ran == 0 and trained == [0, 1, 2, 3]  # the study is complete
