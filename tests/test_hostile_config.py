"""Config files that are FIFOs, devices, folders, huge or nested without end: refused in one line
before they are read (or waited on), and a bad setting named as the file's once."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()


def _one_line_failure(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def _train_config(path: Path | str, tmp_path: Path):
    return runner.invoke(app, ["train", "--config", str(path), "--runs-dir", str(tmp_path / "r")])


def test_a_config_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "cfg.json"
    os.mkfifo(fifo)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(_train_config(fifo, tmp_path)))
    thread.start()
    thread.join(30)
    assert done, "reading the FIFO blocked"
    line = _one_line_failure(done[0])
    assert f"cannot read config file {fifo}: it is not a regular file" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_as_config_is_refused_at_once(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    line = _one_line_failure(_train_config("/dev/zero", tmp_path))
    assert "cannot read config file /dev/zero: it is not a regular file" in line
    assert time.perf_counter() - t0 < 10


def test_a_folder_as_config_is_refused(tmp_path: Path) -> None:
    line = _one_line_failure(_train_config(tmp_path, tmp_path))
    assert f"cannot read config file {tmp_path}: it is a folder" in line


def test_a_huge_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    import tracemalloc

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # a sparse gigabyte
    tracemalloc.start()
    line = _one_line_failure(_train_config(big, tmp_path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert f"cannot read config file {big}: it is larger than 1024 KiB" in line
    assert peak < 64 << 20


def test_an_unknown_setting_in_a_config_file_names_the_file_once(tmp_path: Path) -> None:
    cfg = tmp_path / "x.json"
    cfg.write_text(json.dumps({"epoch": 3}))
    line = _one_line_failure(_train_config(cfg, tmp_path))
    assert f"{cfg}: unknown setting(s) epoch" in line
    assert ": config:" not in line


def test_deeply_nested_config_json_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "deep.json"
    cfg.write_text("[" * 100_000 + "]" * 100_000)
    line = _one_line_failure(_train_config(cfg, tmp_path))
    assert str(cfg) in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", str(2**63 - 1)], "--seed must be an integer in -4294967295..4294967295"),
        (["--seed", str(10**26)], "--seed must be an integer in -4294967295..4294967295"),
        (["--seed", str(-(10**26))], "--seed must be an integer in -4294967295..4294967295"),
        (["--lr", "1e308"], "--lr must be at most 1e+18 (the lr of biases, lr x bias lr scale"),
        (["--epochs", str(10**20)], "--epochs must be at most 2147483647"),
        (["--batch-size", str(2**40)], "--batch-size must be at most 2147483647"),
    ],
)
def test_numbers_at_the_edge_of_their_types_are_refused_before_any_folder(
    tmp_path: Path, args: list[str], message: str
) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(runs), "--device", "cpu"])
    assert message in _one_line_failure(result)
    assert not runs.exists()


def test_a_seed_at_the_edge_of_its_range_trains(tiny_config) -> None:
    from cifarnet.training.trainer import train

    summary = train(tiny_config.replace(seed=2**32 - 1, epochs=1))
    assert Path(summary["run_dir"]).is_dir()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["benchmark", "--model", "resnet", "--batch-size", str(10**20)],
            "--batch-size must be an integer in 1..2147483647",
        ),
        (["benchmark", "--model", "resnet", "--seconds", "1e308"], "up to 3600 (an hour per row)"),
        (["benchmark", "--model", "resnet", "--seconds", "nan"], "--seconds must be a positive"),
        (
            ["predict", "x.png", "--model", "m.pt", "--workers", str(10**9)],
            "--workers must be at most 256 threads",
        ),
    ],
)
def test_other_commands_refuse_numbers_at_the_edge(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert message in _one_line_failure(result)
