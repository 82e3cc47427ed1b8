"""A resume on another copy of the training data, which would redraw the validation split and the
subset, is refused in one line and leaves the run as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import TINY_MODEL, write_cifar100
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()


def _one_line_failure(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_resume_on_another_copy_of_the_data_is_refused(tmp_path: Path, cifar100_dir: Path):
    from cifarnet.config.settings import resolve_config
    from cifarnet.training.trainer import train

    config = resolve_config(
        {
            **TINY_MODEL,
            "data_dir": str(cifar100_dir),
            "epochs": 1,
            "batch_size": 64,
            "val_size": 100,
            "runs_dir": str(tmp_path / "runs"),
            "device": "cpu",
            "precision": "fp32",
            "download": False,
        }
    )
    run_dir = Path(train(config)["run_dir"])
    other = tmp_path / "other"
    write_cifar100(other, seed=1)  # the same format, other images and order
    before = (run_dir / "last.pt").read_bytes(), (run_dir / "metrics.csv").read_bytes()
    args = ["train", "--resume", str(run_dir / "last.pt"), "--epochs", "2"]
    line = _one_line_failure(runner.invoke(app, [*args, "--data-dir", str(other)]))
    assert f"--resume {run_dir / 'last.pt'}: " in line
    assert "is not the copy of cifar100 the run was trained on" in line
    assert ((run_dir / "last.pt").read_bytes(), (run_dir / "metrics.csv").read_bytes()) == before
    shutil.rmtree(other)
