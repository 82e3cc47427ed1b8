"""Failures that leave a clean state: a run that fails before its first checkpoint leaves no
folder, a --runs-dir that cannot hold runs is refused before the data is loaded, and the hidden
temporaries of a killed save are removed by the next write in their folder (never a user's
file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cifarnet.io.stale as stale
from cifarnet.cli import app
from cifarnet.config.settings import TrainConfig
from cifarnet.errors import OutputError
from cifarnet.io.atomic import atomic_write
from cifarnet.training.callbacks import TrainCallbacks

runner = CliRunner()


def _one_line_failure(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_run_that_crashes_in_its_first_epoch_leaves_no_folder(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cifarnet.training.trainer as trainer_mod
    from cifarnet.training.trainer import train

    real_step = trainer_mod.train_step
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a crash in the middle of the first epoch")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_step", crash)
    with pytest.raises(RuntimeError):
        train(tiny_config)
    runs = Path(tiny_config.runs_dir)
    assert list(runs.iterdir()) == []  # no folder holding only config.json and metrics.csv
    monkeypatch.undo()
    summary = train(tiny_config)
    assert Path(summary["run_dir"]).name == "train"  # the numbering is not disturbed


def test_a_diverged_first_epoch_leaves_no_folder(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import cifarnet.training.trainer as trainer_mod
    from cifarnet.errors import DivergenceError
    from cifarnet.training.trainer import train

    real = trainer_mod.train_step

    def poisoned(model, images, *args, **kwargs):
        return real(model, torch.full_like(images, float("nan")), *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_step", poisoned)
    with pytest.raises(DivergenceError, match="no checkpoint was saved yet"):
        train(tiny_config)
    assert list(Path(tiny_config.runs_dir).iterdir()) == []


def test_a_run_interrupted_in_its_first_epoch_keeps_its_folder(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal saves last.pt mid-epoch: the folder is the run's, to resume."""
    import cifarnet.training.trainer as trainer_mod
    from cifarnet.errors import TrainingInterrupted
    from cifarnet.training.trainer import train

    real_step = trainer_mod.train_step

    def interrupt(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_step", interrupt)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config)
    (folder,) = Path(tiny_config.runs_dir).iterdir()
    assert (folder / "last.pt").is_file()


@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_a_runs_dir_that_cannot_hold_runs_is_refused_before_loading_data(
    tmp_path: Path, kind: str
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    runs_dir = blocker if kind == "file" else blocker / "runs"
    missing_data = tmp_path / "no-data-here"  # loading the data would fail differently
    args = ["train", "--runs-dir", str(runs_dir), "--data-dir", str(missing_data)]
    t0 = time.perf_counter()
    line = _one_line_failure(runner.invoke(app, [*args, "--no-download", "--device", "cpu"]))
    assert f"--runs-dir {runs_dir}" in line
    assert ("is a file, not a folder" if kind == "file" else f"{blocker} is a file") in line
    assert blocker.read_text() == "a file"
    assert time.perf_counter() - t0 < 60


def test_stale_temporaries_are_swept_and_nothing_else(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    old = time.time() - 2 * stale.STALE_SECONDS
    files = {
        f".best.pt.{dead_pid}.abcd1234.tmp": True,  # its writer is gone
        f".best.pt.{os.getppid()}.abcd1234.tmp": False,  # a live writer, recent
        ".last.pt.k2j4_8zq.tmp": False,  # an older version's, recent
        ".metrics.csv.zz9y8x7w.tmp": True,  # an older version's, old
        ".notes.tmp": False,  # the user's
        "draft.abcd1234.tmp": False,  # not hidden: the user's
        ".x.pt.short.tmp": False,
    }
    for name in files:
        (tmp_path / name).write_text("x")
    os.utime(tmp_path / ".metrics.csv.zz9y8x7w.tmp", (old, old))
    os.utime(tmp_path / ".notes.tmp", (old, old))
    stale._swept.discard(os.path.abspath(tmp_path))
    atomic_write(tmp_path / "best.pt", lambda f: f.write(b"new"))
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"best.pt", *(name for name, gone in files.items() if not gone)}


def test_the_leftover_of_a_kill_9_is_removed_by_the_next_write(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import os, signal
        from cifarnet.io.atomic import atomic_write

        def write(f):
            f.write(b"PK" + b"x" * 4096)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        atomic_write({str(path)!r}, write)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftover.name.startswith(".last.pt.")
    write = f"from cifarnet.io.atomic import atomic_write; atomic_write({str(path)!r}, " + (
        "lambda f: f.write(b'new'))"
    )
    subprocess.run([sys.executable, "-c", write], check=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_write_into_a_missing_folder_is_still_one_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="could not write"):
        atomic_write(tmp_path / "gone" / "x.csv", lambda f: f.write(b"x"))


class _RunFolder(TrainCallbacks):
    """Remembers the run's folder."""

    run: Path | None = None

    def on_start(self, info: dict) -> None:
        self.run = Path(info["run_dir"])


def test_disk_full_at_last_pt_leaves_best_and_metrics_in_agreement(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    import cifarnet.io.checkpoint as checkpoint_mod
    from cifarnet.io.checkpoint import load_checkpoint
    from cifarnet.training.trainer import train

    real_write = checkpoint_mod.atomic_write
    lasts: list[Path] = []

    def full_at_epoch_2(path, write, check=None):
        if Path(path).name == "last.pt":
            lasts.append(path)
            if len(lasts) == 2:
                raise OutputError(f"could not write {path}: No space left on device")
        return real_write(path, write, check)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", full_at_epoch_2)
    folder = _RunFolder()
    config = tiny_config.replace(val_size=0, epochs=3)  # every epoch is the best: best.pt saved
    with pytest.raises(OutputError) as err:
        train(config, callbacks=folder)
    message = str(err.value)
    assert "best.pt and metrics.csv hold epoch 2, last.pt epoch 1" in message
    assert "resuming from last.pt redoes epoch 2" in message and "\n" not in message
    run = folder.run
    assert run is not None
    best_epoch = load_checkpoint(run / "best.pt")["progress"]["epoch"]
    assert best_epoch in pd.read_csv(run / "metrics.csv")["epoch"].tolist()
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 1
    monkeypatch.undo()
    train(resume=run / "last.pt")
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2, 3]


def test_ctrl_c_between_two_export_formats_says_what_was_written(
    tmp_path_factory: pytest.TempPathFactory,
    cifar100_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    from tiny_run import trained_run

    import cifarnet.tasks.exporting as exporting

    pytest.importorskip("onnxruntime")
    run = trained_run(tmp_path_factory, cifar100_dir)
    ckpt = tmp_path / "best.pt"
    shutil.copy(run / "best.pt", ckpt)
    real = exporting._export_one

    def interrupted_after_the_first(fmt, *args, **kwargs):
        if fmt == "torchscript":
            raise KeyboardInterrupt
        return real(fmt, *args, **kwargs)

    monkeypatch.setattr(exporting, "_export_one", interrupted_after_the_first)
    args = ["export", str(ckpt), "--onnx", "--torchscript", "--data-dir", str(cifar100_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    onnx, script = tmp_path / "model.onnx", tmp_path / "model.torchscript.pt"
    assert f"aborted (written: {onnx}; not written: {script})" in result.output
    assert onnx.is_file() and not script.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
