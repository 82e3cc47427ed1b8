"""The codebase stays enterable: ruff enforces function size and complexity (pyproject.toml);
class length, which ruff does not measure, is checked here."""

from __future__ import annotations

import ast
from pathlib import Path

import cifarnet

MAX_CLASS_LINES = 250


def test_no_class_is_longer_than_a_reader_can_take_in() -> None:
    package = Path(cifarnet.__file__).parent
    too_long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_CLASS_LINES:
                    too_long.append(f"{path.relative_to(package)}:{node.name} ({lines} lines)")
    assert not too_long, f"classes over {MAX_CLASS_LINES} lines: {too_long}"


def test_every_subpackage_says_what_it_holds() -> None:
    package = Path(cifarnet.__file__).parent
    for init in sorted(package.glob("*/__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init
