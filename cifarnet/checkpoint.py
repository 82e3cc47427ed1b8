"""Checkpoints: plain dicts of tensors and plain values, written atomically, read safely.

A file is only ever loaded with `torch.load(weights_only=True)`, which refuses any pickled
callable, so a checkpoint can carry data but never code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from cifarnet.errors import CheckpointError, OutputError, one_line

FORMAT = "cifarnet-checkpoint"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    from cifarnet import __version__

    return {"cifarnet": __version__, "torch": str(torch.__version__)}


def stamp(payload: dict[str, Any]) -> dict[str, Any]:
    """Add format, versions and creation time to a checkpoint payload."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **payload,
    }


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
    with the permissions open() would give; its name. Removed again if writing fails."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `payload` to `path` atomically: the file is the old one or the new one, never a
    mix. A failed write (a full disk, no permission) raises OutputError."""
    # serialised in memory first: torch.save reports a failed file write (a full disk) as a
    # RuntimeError from its zip writer, while a plain write raises OSError, which atomic_write
    # turns into one clear line
    buffer = io.BytesIO()
    torch.save(stamp(payload), buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a cifarnet checkpoint, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder without a best.pt; give a run's best.pt or last.pt"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); it is not a checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of foreign files
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses globals (classes, functions) before calling anything, so nothing
        # from the file ran. torch's message advises turning the check off: not relayed.
        found = re.search(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} carries code or objects ({found.group(1)}), refused without running "
                "them; only checkpoints written by cifarnet can be loaded"
            ) from None
        raise CheckpointError(
            f"{path} is not a checkpoint cifarnet can read (not a PyTorch file, corrupt, or "
            "holding objects other than tensors and plain values; nothing in it was run)"
        ) from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({exc})") from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise CheckpointError(
                f"{path} is a TorchScript export, not a checkpoint; give the run's best.pt or "
                "last.pt (or an .onnx export to evaluate and predict)"
            ) from None
        raise CheckpointError(
            f"{path} is truncated or not a PyTorch file ({one_line(exc)})"
        ) from None
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        # the file exists and is not empty: torch's zip reader fails on a cut-off archive with
        # OSError(EINVAL), which as "Invalid argument" alone would read like a bad path
        raise CheckpointError(
            f"{path} is truncated or corrupt (reading it failed: {exc.strerror or exc})"
        ) from None
    except Exception:  # torch's reader of old-style files fails on foreign bytes variously
        # (KeyError: 101 for a text file, ...): the exception says nothing to a user
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (not a file written by torch.save)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} was not written by cifarnet (no {FORMAT!r} header)")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than this cifarnet reads "
            f"({FORMAT_VERSION}); upgrade cifarnet"
        )
    for key in ("model", "state_dict", "data"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks its {key!r} entry; the file is damaged")
    return ckpt


def load_model(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the network from the checkpoint's model config and load its weights: the EMA
    weights when the run kept them (what its validation measured; best.pt holds them as its
    state_dict, last.pt beside the raw weights it resumes from)."""
    from cifarnet.errors import CifarnetError
    from cifarnet.models import build_model

    try:
        model = build_model(ckpt["model"])
    except CifarnetError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model config is malformed ({exc})") from None
    state = ckpt["state_dict"]
    if ckpt.get("ema_state_dict"):
        # torch's AveragedModel: the averaged network's entries under "module.", and a counter
        state = {
            name.removeprefix("module."): value
            for name, value in ckpt["ema_state_dict"].items()
            if name.startswith("module.")
        }
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = one_line(exc)
        raise CheckpointError(
            f"{path}: weights do not fit model {ckpt['model'].get('name')!r} "
            f"(wrong architecture: {detail})"
        ) from None
    return model


def find_latest_checkpoint(runs_dir: str | os.PathLike = "runs", name: str = "best.pt") -> Path:
    """The newest runs/*/best.pt (by modification time) for commands given no checkpoint."""
    candidates = sorted(Path(runs_dir).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise CheckpointError(
            f"no checkpoint given and none found as {Path(runs_dir) / '*' / name}; "
            "train one with `cifarnet train` or pass a path"
        )
    return candidates[-1]
