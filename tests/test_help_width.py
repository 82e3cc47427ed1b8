"""Help at 80 columns: every line fits, every option's names are shown whole, and a flag shows
no value placeholder."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()
COMMANDS = ["train", "evaluate", "predict", "export", "benchmark", "models"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_shows_every_flag_whole(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in result.output
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert name in result.output, name


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_show_no_value_placeholder(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in click_command.params:
        if getattr(param, "is_flag", False):
            line = next(line for line in result.output.splitlines() if param.opts[0] in line)
            shown = line.split("  ")[0].strip() if "  " in line.strip() else line.strip()
            assert "<" not in shown, line
