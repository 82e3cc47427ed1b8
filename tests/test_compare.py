"""`cifarnet compare` on hand-made run folders: finished runs grouped by settings with mean and
std checked against a hand computation, an unfinished and a broken run listed, bad folders
refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.errors import ConfigError
from cifarnet.tasks.compare import compare

HEADER = "epoch,lr,train_loss,train_top1,val_loss,val_top1,val_top5,train_images,"
HEADER += "epoch_seconds,images_per_second,elapsed_seconds\n"


def make_run(
    root: Path,
    name: str,
    seed: int,
    test_top1: float | None,
    *,
    lr: float = 0.1,
    val: tuple[float, ...] = (10.0, 20.0),
) -> Path:
    """A run folder; `test_top1` None: unfinished (no summary.json)."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {"recipe": "fast", "model": "fastnet", "epochs": 2, "time_minutes": None,
              "lr": lr, "seed": seed, "name": name, "runs_dir": str(root),
              "_meta": {"parameters": 1234}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    rows = "".join(
        f"{e},0.1,2.0,30.0,2.5,{v},{v + 20},400,1.0,{100 + seed},{e * 1.0}\n"
        for e, v in enumerate(val, start=1)
    )
    (folder / "metrics.csv").write_text(HEADER + rows)
    if test_top1 is not None:
        summary = {"recipe": "fast", "model": "fastnet", "parameters": 1234, "epochs": len(val),
                   "best_epoch": len(val), "best_val_top1": max(val), "test_top1": test_top1,
                   "test_top5": test_top1 + 20, "train_seconds": 10.0 + seed,
                   "train_images_per_second": 100.0 + seed}  # fmt: skip
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "a0", 0, 50.0, val=(10.0, 40.0))
    make_run(root, "a1", 1, 52.0, val=(10.0, 44.0))
    make_run(root, "a2", 2, 57.0, val=(10.0, 45.0))
    make_run(root, "b0", 0, 60.0, lr=0.2)  # other settings: its own row, no group
    make_run(root, "going", 3, None, val=(5.0, 15.0, 12.0))  # unfinished
    broken = make_run(root, "broken", 4, 1.0)
    (broken / "summary.json").write_text("{ not json")
    return root


def test_groups_by_settings_with_mean_and_std_by_hand(runs: Path) -> None:
    result = compare([str(runs / "*")])
    assert [r.row["run"] for r in result.runs][:4] == ["b0", "a2", "a1", "a0"]
    [group] = result.groups
    assert sorted(r.row["run"] for r in group.runs) == ["a0", "a1", "a2"]
    assert group.mean["test_top1"] == pytest.approx(53.0)  # (50 + 52 + 57) / 3
    # sample std: sqrt(((50-53)^2 + (52-53)^2 + (57-53)^2) / 2) = sqrt(13)
    assert group.std["test_top1"] == pytest.approx(math.sqrt(13))
    assert group.mean["best_val_top1"] == pytest.approx(43.0)
    assert group.std["best_val_top1"] == pytest.approx(math.sqrt(7))  # (9 + 1 + 4) / 2
    assert group.mean["train_seconds"] == pytest.approx(11.0)
    status = {r.row["run"]: r.status for r in result.runs}
    assert status["going"] == "unfinished" and status["broken"] == "broken"
    going = next(r for r in result.runs if r.row["run"] == "going")
    assert going.row["best_val_top1"] == 15.0 and going.row["best_epoch"] == 2
    assert going.row["epochs"] == 3
    assert "summary.json" in next(r for r in result.runs if r.status == "broken").reason


def test_cli_table_csv_and_plot(runs: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "compare.csv", tmp_path / "curves.png"
    args = ["compare", str(runs / "a0"), str(runs / "a1"), str(runs / "a2"), str(runs / "going")]
    args += [str(runs / "broken"), "--sort", "best_val_top1", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "53.00 ± 3.61" in result.output  # test top-1 of group 1
    assert "unfinished" in result.output and "broken" in result.output
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table["kind"]) == ["run"] * 5 + ["mean", "std"]
    assert table[table.kind == "mean"]["test_top1"].item() == pytest.approx(53.0)
    assert plot.stat().st_size > 1000
    again = CliRunner().invoke(app, [*args, "--plot", str(plot)])
    assert again.exit_code == 1 and "already exists" in again.output


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no such folder"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "not a run folder"),
        (lambda root: str(root / "nothing*"), "no folder matches"),
    ],
)
def test_bad_folders_refused_in_one_line(tmp_path: Path, make, message: str) -> None:
    target = make(tmp_path)
    with pytest.raises(ConfigError, match=message):
        compare([target])
    result = CliRunner().invoke(app, ["compare", str(target)])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_public_api_exports_compare_and_train_seeds() -> None:
    import cifarnet
    from cifarnet.tasks.repeat import train_seeds

    assert cifarnet.compare is compare and cifarnet.train_seeds is train_seeds


def test_bad_sort_and_out_refused(runs: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(runs / "a0"), "--sort", "speed"])
    assert result.exit_code == 1 and "unknown sort column" in result.output
    result = CliRunner().invoke(app, ["compare", str(runs / "a0"), "--plot", "x.txt"])
    assert result.exit_code == 1 and ".png" in result.output


def test_a_run_folder_name_that_is_not_utf8_gets_its_row_and_curve(tmp_path: Path) -> None:
    import os

    name = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not valid UTF-8
    make_run(tmp_path / "runs", name, 0, 50.0)
    out, plot = tmp_path / "compare.csv", tmp_path / "curves.png"
    args = ["compare", str(tmp_path / "runs" / "*"), "--out", str(out), "--plot", str(plot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert b"caf\xe9" in out.read_bytes()  # the row names the folder by its own bytes
    assert plot.read_bytes().startswith(b"\x89PNG")
