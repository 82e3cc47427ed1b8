"""A tiny trained run shared by the evaluate / predict / export / benchmark tests: trained once
per test session (about a second), then copied where a test needs its own runs/ folder."""

from __future__ import annotations

import shutil
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
