"""Checkpoints: atomic writes that survive faults, and safe loading of bad files."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.config.settings import TrainConfig
from cifarnet.errors import CheckpointError, ConfigError, OutputError
from cifarnet.io.atomic import atomic_write
from cifarnet.io.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from cifarnet.models import create_model, model_config
from cifarnet.training.trainer import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, cifar100_dir: Path) -> Path:
    """A finished one-epoch run on tiny data (best.pt and last.pt are real)."""
    from conftest import TINY_MODEL

    from cifarnet.config.settings import resolve_config

    runs = tmp_path_factory.mktemp("ckpt-runs")
    config = resolve_config(
        {
            **TINY_MODEL,
            "data_dir": str(cifar100_dir),
            "epochs": 1,
            "batch_size": 32,
            "subset": 32,
            "val_size": 20,
            "runs_dir": str(runs),
            "device": "cpu",
            "precision": "fp32",
            "download": False,
        }
    )
    return Path(train(config)["run_dir"])


def _raw(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _payload() -> dict:
    model = create_model("resnet", 10, widths=[4, 4, 4, 4], depths=[1, 1, 1, 1])
    return {
        "model": model_config("resnet", 10, {"widths": [4, 4, 4, 4], "depths": [1, 1, 1, 1]}),
        "state_dict": model.state_dict(),
        "data": {"dataset": "cifar10"},
    }


def _one_line_error(exc: pytest.ExceptionInfo, path: Path) -> str:
    text = str(exc.value)
    assert str(path) in text
    assert "\n" not in text and "\x1b" not in text
    return text


# writing


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    save_checkpoint(_payload(), path)
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["format_version"] == FORMAT_VERSION
    assert set(ckpt["versions"]) == {"cifarnet", "torch"} and ckpt["created"]
    model = load_model(ckpt, path)
    assert torch.equal(model.state_dict()["fc_layer.weight"], ckpt["state_dict"]["fc_layer.weight"])


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    # mkstemp creates 0600 files; outputs must be as readable as any other file the user writes
    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.txt", lambda f: f.write(b"hi"))
        os.umask(0o027)
        atomic_write(tmp_path / "y.txt", lambda f: f.write(b"hi"))
        assert os.umask(0o022) == 0o027  # read, not changed, by the write
    finally:
        os.umask(umask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "y.txt").stat().st_mode & 0o777 == 0o640


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_payload(), path)
    before = path.read_bytes()

    def disk_full(f) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as err:
        atomic_write(path, disk_full)
    text = _one_line_error(err, path)
    assert "No space left on device" in text and "previous file" in text and "unchanged" in text
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_disk_full_while_saving_a_checkpoint_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_payload(), path)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def write(self, data) -> int:
            self.f.write(bytes(data)[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OutputError) as err:
        save_checkpoint(_payload(), path)
    assert "No space left on device" in _one_line_error(err, path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_interrupt_during_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_payload(), path)
    before = path.read_bytes()

    def interrupted(f) -> None:
        f.write(before[:100])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_write_into_missing_folder_is_an_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="could not write"):
        save_checkpoint(_payload(), tmp_path / "gone" / "last.pt")


def test_kill_9_during_save_leaves_the_previous_file(tmp_path: Path) -> None:
    """A real SIGKILL in the middle of torch.save (after part of the new file is on disk)."""
    path = tmp_path / "last.pt"
    save_checkpoint(_payload(), path)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal
        from cifarnet.io.atomic import atomic_write

        def write(f):
            f.write(b"PK" + b"x" * 4096)  # part of a new checkpoint
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        atomic_write({str(path)!r}, write)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert load_checkpoint(path)["format"] == FORMAT


# reading bad files


class _Evil:
    """Unpickling this would create a file: proof that something ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_callable_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "format_version": 1, "state_dict": {}, "x": evil}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = _one_line_error(err, path)
    assert "refused" in text and "open" in text
    assert "weights_only" not in text  # torch's advice to turn the check off is not relayed
    assert not marker.exists()


def _bad_files(tmp_path: Path, run_dir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected phrase)."""
    last = run_dir / "last.pt"
    raw = last.read_bytes()
    files = {}

    def put(name: str, content: bytes, phrase: str) -> None:
        files[name] = (tmp_path / f"{name}.pt", phrase)
        files[name][0].write_bytes(content)

    def put_obj(name: str, obj: object, phrase: str) -> None:
        files[name] = (tmp_path / f"{name}.pt", phrase)
        torch.save(obj, files[name][0])

    put("empty", b"", "is empty (0 bytes)")
    put("truncated", raw[: len(raw) // 2], "truncated or")
    put("truncated_tail", raw[:-10], "truncated or")
    put("garbage", os.urandom(4096), "not a")
    put("text", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "not a")
    put("plain_pickle", pickle.dumps({"a": 1}, protocol=4), "not a")
    put_obj("foreign_tensor", torch.zeros(3), "was not written by cifarnet")
    put_obj("foreign_dict", {"model": 1, "state_dict": {}}, "was not written by cifarnet")
    ckpt = _raw(last)
    put_obj("newer", {**ckpt, "format_version": FORMAT_VERSION + 1}, "newer than this cifarnet")
    put_obj("no_state", {k: v for k, v in ckpt.items() if k != "state_dict"}, "lacks its")
    return files


BAD = [
    "empty",
    "truncated",
    "truncated_tail",
    "garbage",
    "text",
    "plain_pickle",
    "foreign_tensor",
    "foreign_dict",
    "newer",
    "no_state",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_checkpoint_files(tmp_path: Path, run_dir: Path, name: str) -> None:
    path, phrase = _bad_files(tmp_path, run_dir)[name]
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert phrase in _one_line_error(err, path)


def test_a_checkpoint_cut_off_anywhere_is_called_truncated(tmp_path: Path, run_dir: Path) -> None:
    raw = (run_dir / "last.pt").read_bytes()
    path = tmp_path / "cut.pt"
    for length in range(64, len(raw), max(len(raw) // 40, 1)):  # past the first zip header
        path.write_bytes(raw[:length])
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert "truncated or" in _one_line_error(err, path), length


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"is a folder without a best\.pt"):
        load_checkpoint(tmp_path)
    notes = tmp_path / "notes.pt"
    notes.write_text("hello notes\n")  # torch's own error here is "KeyError: 104"
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(notes)
    assert (
        str(err.value) == f"{notes} is not a PyTorch checkpoint (not a file written by torch.save)"
    )


def test_wrong_architecture(tmp_path: Path, run_dir: Path) -> None:
    ckpt = load_checkpoint(run_dir / "best.pt")
    ckpt["model"] = model_config("resnet_reference", 100)
    with pytest.raises(CheckpointError) as err:
        load_model(ckpt, run_dir / "best.pt")
    assert "wrong architecture" in _one_line_error(err, run_dir / "best.pt")


# the same faults through the CLI: exit 1, one line, no traceback


def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("name", ["truncated", "garbage", "foreign_tensor", "newer"])
def test_cli_resume_from_bad_file(tmp_path: Path, run_dir: Path, name: str) -> None:
    path, phrase = _bad_files(tmp_path, run_dir)[name]
    line = _cli_error(["train", "--resume", str(path)])
    assert str(path) in line and phrase in line


def test_cli_resume_wrong_architecture(tmp_path: Path, run_dir: Path) -> None:
    ckpt = _raw(run_dir / "last.pt")
    ckpt["state_dict"] = create_model("resnet", 100).state_dict()  # not the run's model
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    line = _cli_error(["train", "--resume", str(path), "--epochs", "2"])
    assert str(path) in line and "wrong architecture" in line
    # what the saved weights are bound to cannot be overridden; refused before data is loaded
    overrides = {
        "epochs": 2,
        "data_dir": str(tmp_path / "none"),
        "model_kwargs": {"widths": [4] * 4},
    }
    with pytest.raises(ConfigError, match=r"model_kwargs \(config file\) cannot change when"):
        train(resume=run_dir / "last.pt", overrides=overrides)


def test_cli_resume_cannot_change_model_or_dataset(run_dir: Path) -> None:
    last = str(run_dir / "last.pt")
    line = _cli_error(["train", "--resume", last, "--model", "resnet18", "--epochs", "3"])
    assert "--model cannot change when resuming" in line and "start a new run" in line
    line = _cli_error(["train", "--resume", last, "--dataset", "cifar10", "--epochs", "3"])
    assert "--dataset cannot change when resuming" in line
    # the validation split too: its images may already have been trained on
    line = _cli_error(["train", "--resume", last, "--val-size", "50", "--epochs", "3"])
    assert "--val-size cannot change when resuming" in line and "was started with" in line
    # nor the recipe: the name labels the values the run started from
    line = _cli_error(["train", "--resume", last, "--recipe", "fast", "--epochs", "3"])
    assert "--recipe cannot change when resuming" in line
    # nor the batch size: the saved step counts are in its batches, and the learning-rate
    # schedule and a mid-epoch restart are read from them
    saved = _raw(run_dir / "last.pt")["train_config"]["batch_size"]
    line = _cli_error(["train", "--resume", last, "--batch-size", str(saved * 2), "--epochs", "3"])
    assert "--batch-size cannot change when resuming" in line
    with pytest.raises(TypeError, match="uses its own config"):
        train(TrainConfig(), resume=last)


def test_cli_resume_from_a_run_folder_names_its_last_pt(run_dir: Path) -> None:
    line = _cli_error(["train", "--resume", str(run_dir)])
    assert f"is a folder; resume from the run's last.pt ({run_dir / 'last.pt'})" in line


def test_cli_resume_from_best_pt(run_dir: Path) -> None:
    line = _cli_error(["train", "--resume", str(run_dir / "best.pt"), "--epochs", "2"])
    assert "is not a last.pt" in line


def test_cli_resume_of_a_finished_run_asks_for_more_epochs(run_dir: Path) -> None:
    line = _cli_error(["train", "--resume", str(run_dir / "last.pt")])
    assert "already completed 1 of 1 epochs" in line and "--epochs N (N > 1)" in line
