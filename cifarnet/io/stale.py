"""The hidden temporaries of writes that never finished (a `kill -9` in the middle of a save or an
export), removed by the next write in their folder.

An atomic write's temporary is named `.{target}.{pid}.{random}.tmp` beside its target (see
cifarnet.io.atomic). Only names of that form are ever removed, and only when the process that
wrote them is gone or when they are older than STALE_SECONDS (a write that old died, or is
somebody else's): a user's own file never matches. Temporaries of older versions, named
`.{target}.{random}.tmp`, are removed by age alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path

STALE_SECONDS = 15 * 60
TEMPORARY_SUFFIX = ".tmp"
# mkstemp's random part: 8 characters of [a-z0-9_]
_OURS = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d{1,10})\.)?(?P<random>[a-z0-9_]{8})\.tmp$")
_swept: set[str] = set()


def temporary_prefix(target: Path) -> str:
    """The prefix of the temporary of a write to `target` by this process."""
    return f".{target.name}.{os.getpid()}."


def sweep_once(folder: Path) -> list[Path]:
    """`sweep(folder)` the first time this process writes in `folder`; [] after."""
    key = os.path.abspath(folder)
    if key in _swept:
        return []
    _swept.add(key)
    return sweep(folder)


def sweep(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the stale temporaries in `folder` (see the module docstring); the removed paths.
    Anything unreadable or vanishing meanwhile is left alone, silently."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _OURS.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                age = now - entry.stat(follow_symlinks=False).st_mtime
                pid = int(match["pid"]) if match["pid"] else None
                if age > STALE_SECONDS or (pid is not None and _dead(pid)):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _dead(pid: int) -> bool:
    """True when no process `pid` runs on this machine (POSIX; elsewhere: never known)."""
    if pid == os.getpid():
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would end the process there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False
