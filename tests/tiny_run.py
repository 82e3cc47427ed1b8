"""A tiny trained run shared by the evaluate / predict / export / benchmark tests: trained once
per test session (about a second), then copied where a test needs its own runs/ folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TINY_MODEL

_RUNS: dict[Path, Path] = {}


def trained_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """runs/tiny/ (best.pt, last.pt, ...) of a 1-epoch run on the tiny CIFAR-100 at `data_dir`."""
    if data_dir not in _RUNS:
        from cifarnet.config.settings import resolve_config
        from cifarnet.training.trainer import train

        root = tmp_path_factory.mktemp("tiny-run")
        config = resolve_config(
            {
                **TINY_MODEL,
                "data_dir": str(data_dir),
                "epochs": 1,
                "batch_size": 64,
                "eval_batch_size": 128,
                "val_size": 100,
                "runs_dir": str(root / "runs"),
                "name": "tiny",
                "device": "cpu",
                "precision": "fp32",
                "download": False,
            }
        )
        _RUNS[data_dir] = Path(train(config)["run_dir"])
    return _RUNS[data_dir]


def copy_run(run: Path, runs_dir: Path, name: str) -> Path:
    """A copy of `run` as runs_dir/name (a run of its own for the newest-run default)."""
    target = runs_dir / name
    shutil.copytree(run, target)
    return target


def one_line_failure(result, code: int = 1) -> str:
    """The single `error:` line of a CliRunner result that failed with `code`, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def load_best(run: Path) -> dict:
    """The run's best.pt as the plain dict it is on disk."""
    import torch

    return torch.load(run / "best.pt", weights_only=True)


def save_checkpoint_dict(ckpt: dict, path: Path) -> Path:
    """`ckpt` written to `path` as is (crafted checkpoints skip the atomic writer on purpose)."""
    import torch

    torch.save(ckpt, path)
    return path


def one_image_folder(folder: Path) -> Path:
    """`folder` holding one 32x32 PNG, for predict."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (100, 20, 200)).save(folder / "a.png")
    return folder


# what a finished run's folder holds (one stopped by a signal: all but summary.json)
RUN_FILES = ["best.pt", "config.json", "last.pt", "metrics.csv", "results.png", "summary.json"]


def wait_for_rows(proc: subprocess.Popen, metrics: Path, rows: int, timeout: float = 90) -> None:
    """Wait until `proc`'s training has written `rows` rows to `metrics`; fail when it ends
    first or `timeout` seconds pass (then killed, with its process group when it leads one:
    the processes of a distributed run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") > rows:  # header + rows
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early: {proc.communicate()}")
        time.sleep(0.05)
    if os.getpgid(proc.pid) == proc.pid:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    pytest.fail(f"training did not reach epoch {rows} in {timeout} s: {proc.communicate()}")
