"""`train --seeds/--repeat`: one run folder per seed, the group's mean and std; bad seeds
refused before any training."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.errors import ConfigError
from cifarnet.tasks.repeat import parse_seeds, train_seeds
from tests.conftest import TINY_MODEL


def test_parse_seeds() -> None:
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    assert parse_seeds(repeat=3, first=5) == [5, 6, 7]
    for text, message in (("0,1,0", "repeats 0"), ("0,x", "whole numbers"), ("", "whole")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(text)
    with pytest.raises(ConfigError, match="at least 1"):
        parse_seeds(repeat=0)


def test_train_seeds_folders_and_group_summary(tiny_config) -> None:
    config = tiny_config.replace(epochs=1, name="grp")
    group = train_seeds(config, [3, 7])
    folder = Path(group["folder"])
    assert folder.name == "grp" and (folder / "group.csv").is_file()
    seeds = []
    for seed in (3, 7):
        run = folder / f"seed-{seed}"
        seeds.append(json.loads((run / "config.json").read_text())["seed"])
        assert (run / "summary.json").is_file()
    assert seeds == [3, 7]
    saved = json.loads((folder / "group.json").read_text())
    tops = [json.loads((folder / f"seed-{s}" / "summary.json").read_text())["test_top1"]
            for s in (3, 7)]  # fmt: skip
    assert saved["mean"]["test_top1"] == pytest.approx(statistics.fmean(tops))
    assert saved["std"]["test_top1"] == pytest.approx(statistics.stdev(tops))
    assert saved["seeds"] == [3, 7] and saved["settings"]["epochs"] == 1
    import pandas as pd

    assert list(pd.read_csv(folder / "group.csv")["kind"]) == ["run", "run", "mean", "std"]


def test_cli_repeat_and_bad_seeds(cifar100_dir: Path, tmp_path: Path) -> None:
    flags = ["train", "--data-dir", str(cifar100_dir), "--runs-dir", str(tmp_path / "runs")]
    flags += ["--epochs", "1", "--val-size", "100", "--device", "cpu", "--precision", "fp32"]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY_MODEL, "batch_size": 64}))
    flags += ["--config", str(config), "--no-download", "--quiet"]
    bad = CliRunner().invoke(app, [*flags, "--seeds", "1,2,1"])
    assert bad.exit_code == 1 and "repeats 1" in bad.output
    assert not (tmp_path / "runs").exists()  # refused before any folder or training
    both = CliRunner().invoke(app, [*flags, "--seeds", "1", "--repeat", "2"])
    assert both.exit_code == 1 and "not both" in both.output
    result = CliRunner().invoke(app, [*flags, "--repeat", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "mean ± std of 2" in result.output
    assert sorted(p.name for p in (tmp_path / "runs" / "seeds").iterdir()) == [
        "group.csv",
        "group.json",
        "seed-4",
        "seed-5",
    ]
