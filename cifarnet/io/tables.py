"""Result files of evaluate, predict, export and benchmark: never overwritten by accident, and
written atomically, so a failed write leaves the earlier file intact."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifarnet.errors import ConfigError, OutputError
from cifarnet.io.atomic import atomic_write, atomic_write_all
from cifarnet.io.untrusted import csv_cell


def check_csv_name(out: str | os.PathLike, example: str) -> None:
    """Refuse (ConfigError) an --out that does not name a .csv file; `example` is shown."""
    if Path(out).suffix.lower() != ".csv":
        raise ConfigError(f"--out {out}: give a .csv file name (e.g. {example})")


def check_new_files(paths: Sequence[str | os.PathLike], force: bool) -> None:
    """Refuse (OutputError) when any of `paths` exists, unless `force`, or could not be written
    (its folder is a file, or is not writable); a folder is refused always. Call before the
    work, so a refusal costs nothing."""
    for path in map(Path, paths):
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name")
        if path.exists() and not force:
            raise OutputError(f"{path} already exists; pass --force to overwrite it")
        _check_writable_folder(path)


def _check_writable_folder(path: Path) -> None:
    """The nearest existing folder above `path` must be a folder we may write in (the missing
    ones below it are created at write time)."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the folder {parent} is not writable")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    make_parent(path)
    atomic_write(path, lambda f: f.write(data))


def write_all(files: dict[Path, bytes]) -> None:
    """Several result files, all written or none (see atomic_write_all)."""
    for path in files:
        make_parent(path)
    atomic_write_all(files)


def write_csv(
    rows: list[dict[str, Any]] | dict[str, list[Any]],
    path: str | os.PathLike,
    columns: list[str] | None = None,
) -> None:
    """A CSV (see csv_bytes), written atomically."""
    write_bytes(path, csv_bytes(rows, columns))


def csv_bytes(
    rows: list[dict[str, Any]] | dict[str, list[Any]], columns: list[str] | None = None
) -> bytes:
    """A CSV (pandas, no index) from rows or from columns, in UTF-8. Every text cell and header
    goes through `untrusted.csv_cell`: one a spreadsheet would run as a formula is neutralised,
    and a file name that is not valid UTF-8 (Python holds its bytes as surrogates) is kept as its
    original bytes, so the row still names the file."""
    import pandas as pd

    if not isinstance(rows, dict):
        names = columns or list(dict.fromkeys(k for row in rows for k in row))
        rows = {k: [row.get(k) for row in rows] for k in names}
    # A text column stays a column of Python objects: pandas 3 stores text as its "str" dtype,
    # which with pyarrow installed is an Arrow array, and Arrow refuses the surrogates of a file
    # name that is not UTF-8 (UnicodeEncodeError: surrogates not allowed).
    frame = pd.DataFrame(
        {
            csv_cell(k): pd.Series([csv_cell(v) for v in values], dtype=_dtype(values))
            for k, values in rows.items()
        },
        columns=[csv_cell(c) for c in columns] if columns else None,
    )
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8", errors="surrogateescape")


def _dtype(values: list[Any]) -> type | None:
    """object for a column holding text, else None (pandas infers the numeric dtype)."""
    return object if any(isinstance(v, str) for v in values) else None


def make_parent(path: Path) -> None:
    """Create the folder `path` goes into (OutputError when that fails)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {path.parent}: {exc.strerror or exc}") from None
