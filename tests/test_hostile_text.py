"""Untrusted text: class names carrying terminal escapes and spreadsheet formulas, file names
that are not UTF-8, run names with control characters. Shown and stored harmlessly, or refused
in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from tiny_run import (
    load_best,
    one_image_folder,
    one_line_failure,
    save_checkpoint_dict,
    trained_run,
)
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.io.untrusted import csv_cell, has_control, printable

runner = CliRunner()


EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\rover\nline\x1b]8;;http://x\x1b\\link"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


def test_printable_removes_escape_sequences_and_control_characters() -> None:
    text = printable(EVIL)
    assert not has_control(text)
    assert "\x1b" not in text and "\r" not in text and "\n" not in text and "\x07" not in text
    assert "red" in text and "link" in text and "pwned" not in text
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\ufffd"
    assert printable("a\u202eb") == "a?b"  # a right-to-left override
    assert printable("plain name_1") == "plain name_1"


@pytest.mark.parametrize("cell", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(cell: str) -> None:
    assert csv_cell(cell) == "'" + cell
    assert csv_cell("apple") == "apple"
    assert csv_cell(-1.5) == -1.5  # numbers stay numbers


def test_class_names_from_a_checkpoint_reach_neither_the_terminal_nor_a_spreadsheet(
    run: Path, tmp_path: Path
) -> None:
    ckpt = load_best(run)
    classes = list(ckpt["data"]["classes"])
    classes = [f'=HYPERLINK("http://x","{c}")' + EVIL for c in classes]
    ckpt["data"]["classes"] = classes
    ckpt["data"]["superclasses"] = ["@" + s for s in ckpt["data"]["superclasses"]]
    model = save_checkpoint_dict(ckpt, tmp_path / "evil.pt")
    out = tmp_path / "p.csv"
    args = ["predict", str(one_image_folder(tmp_path / "photos")), "--model", str(model)]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\r" not in result.output and "\x07" not in result.output
    row = pd.read_csv(out, keep_default_na=False).iloc[0]
    assert row["label"].startswith("'=HYPERLINK")
    assert row["superclass"].startswith("'@")


def test_a_run_name_with_control_characters_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--name", "x\x1b[31m", "--runs-dir", str(tmp_path)])
    line = one_line_failure(result)
    assert "--name must be a plain folder name (no path separators or control" in line
    assert "\x1b" not in result.output
    assert list(tmp_path.iterdir()) == []
