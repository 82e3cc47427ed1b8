"""Checkpoints: plain dicts of tensors and plain values, written atomically, read safely.

A file is only ever loaded with `torch.load(weights_only=True)`, which refuses any pickled
callable, so a checkpoint can carry data but never code.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from cifarnet.errors import CheckpointError, one_line
from cifarnet.io.atomic import atomic_write

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
    _check_file(path)
    ckpt = _torch_load(path, map_location)
    _check_header(ckpt, path)
    return ckpt


def _check_file(path: Path) -> None:
    """Refuse what is no file to read before torch tries it."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder without a best.pt; give a run's best.pt or last.pt"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); it is not a checkpoint")


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    """torch.load(weights_only=True), each way it can fail told as one CheckpointError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols of foreign files
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from None
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


def _refused(path: Path, exc: pickle.UnpicklingError) -> CheckpointError:
    """weights_only refuses globals (classes, functions) before calling anything, so nothing
    from the file ran. torch's message advises turning the check off: not relayed."""
    found = re.search(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)", str(exc))
    if found:
        return CheckpointError(
            f"{path} carries code or objects ({found.group(1)}), refused without running "
            "them; only checkpoints written by cifarnet can be loaded"
        )
    return CheckpointError(
        f"{path} is not a checkpoint cifarnet can read (not a PyTorch file, corrupt, or "
        "holding objects other than tensors and plain values; nothing in it was run)"
    )


def _check_header(ckpt: Any, path: Path) -> None:
    """A dict with cifarnet's header, a format version this code reads, the entries every
    checkpoint has."""
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
