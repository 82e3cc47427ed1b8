"""Atomic file writes: a file is the old one or the new one, never a mix, even after a crash."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from cifarnet.errors import OutputError
from cifarnet.io.stale import sweep_once, temporary_prefix


def atomic_write(path: str | os.PathLike, write: Any, check: Any = None) -> None:
    """Write through `write(fileobj)` to a temporary file in the same folder, flush, fsync,
    then rename over `path`: a reader (or a crash) sees the old file or the new, never half.
    `check(temp_path)`, when given, inspects the written file before the rename; if it raises,
    the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp_name = None
    try:
        tmp_name = _write_temporary(path, write)
        if check is not None:
            check(Path(tmp_name))
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OutputError(
            f"could not write {path}: {exc.strerror or exc}; the previous file, "
            "if any, is unchanged"
        ) from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def atomic_write_all(files: dict[Path, bytes]) -> None:
    """Write every file or none: all to temporary files first (flushed, fsynced), then each
    renamed into place, which takes no space. A failed write (a full disk) removes the
    temporary files and leaves every earlier file as it was."""
    temporary: dict[Path, str] = {}
    try:
        for path, data in files.items():
            try:
                temporary[path] = _write_temporary(path, lambda f, data=data: f.write(data))
            except OSError as exc:
                raise OutputError(
                    f"could not write {path}: {exc.strerror or exc}; none of "
                    f"{', '.join(p.name for p in files)} was written or changed"
                ) from None
        for path in list(temporary):
            try:
                os.replace(temporary[path], path)
            except OSError as exc:
                raise OutputError(f"could not write {path}: {exc.strerror or exc}") from None
            del temporary[path]
        for folder in {path.parent for path in files}:
            _fsync_dir(folder)
    finally:
        for tmp_name in temporary.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _write_temporary(path: Path, write: Any) -> str:
    """A temporary file beside `path` holding what `write(fileobj)` wrote, flushed and fsynced,
    with the permissions open() would give; its name. Removed again if writing fails. Named
    `.{name}.{pid}.{random}.tmp`, so that the next write in the folder can tell a killed
    write's leftovers (cifarnet.io.stale) from a live one's."""
    sweep_once(path.parent)  # what a killed earlier write left here
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # POSIX (Windows has no fchmod before Python 3.13)
                os.fchmod(fd, _default_mode())  # mkstemp makes 0600; give what open() gives
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return tmp_name


def _default_mode() -> int:
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask. Linux reports it in /proc; elsewhere the only way to read it is to
    set it and put it back, which for that instant applies to every thread of the process."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
