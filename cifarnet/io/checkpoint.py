"""Checkpoints: plain dicts of tensors and plain values, written atomically, read safely.

A file is only ever loaded with `torch.load(weights_only=True)`, which refuses any pickled
callable, so a checkpoint can carry data but never code.

This module owns the schema: `best_payload` and `last_payload` build the two kinds of file, and
`SavedRun` reads their entries back. Every other module goes through them. The entries, in the
order they are written (`stamp` puts its header first):

    format, format_version  "cifarnet-checkpoint", 1: what `load_checkpoint` checks first
    versions                {"cifarnet": ..., "torch": ...} that wrote the file
    created                 UTC time of the write, ISO 8601, to the second
    model                   models.model_config: {"name", "num_classes", "kwargs"}, what rebuilds
                            the network
    state_dict              the network's weights, CPU tensors by parameter name. best.pt: the
                            weights its validation measured (the EMA average with --ema);
                            last.pt: the raw weights training continues from
    data                    the dataset's description (data.datasets.data_info: names, classes,
                            mean, std, image_size, train_fingerprint) plus "source", the absolute
                            folder the data was read from
    train_config            TrainConfig.to_dict() of the run
    progress                training.state.Progress as a dict: where the run stands
    kind                    "best" or "last"
  last.pt only (what an exact resume needs):
    optimizer               SGD's state_dict (its param_groups carry lr_scale and plateau_factor)
    scheduler               ReduceLROnPlateau's state_dict, or None without --schedule plateau
    scaler                  GradScaler's state_dict (fp16), or None
    ema_state_dict          AveragedModel's state_dict ("module."-prefixed weights and
                            "n_averaged"), or None without --ema
    lookahead_state         the slow weights of --lookahead (floating-point state_dict
                            entries, CPU tensors by name), or None without it
    rng                     {"torch": CPU generator state (uint8 tensor), "cuda": one state per
                            GPU (empty without CUDA), "data": None at an epoch's end, else
                            {"generator": the epoch's shuffling generator's state, "order": the
                            epoch's image order (int64, (N,))}}
    history                 the metrics.csv rows of every finished epoch, as dicts
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
from cifarnet.io.metadata import check_model_config

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


def best_payload(
    model: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    data: dict[str, Any],
    train_config: dict[str, Any],
    progress: dict[str, Any],
) -> dict[str, Any]:
    """best.pt's entries (see the module docstring); `save_checkpoint` adds the header."""
    return {**_common(model, state_dict, data, train_config, progress), "kind": "best"}


def last_payload(
    model: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    data: dict[str, Any],
    train_config: dict[str, Any],
    progress: dict[str, Any],
    *,
    optimizer: dict[str, Any],
    scheduler: dict[str, Any] | None,
    scaler: dict[str, Any] | None,
    ema_state_dict: dict[str, Any] | None,
    lookahead_state: dict[str, torch.Tensor] | None,
    rng: dict[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """last.pt's entries (see the module docstring); `save_checkpoint` adds the header."""
    return {
        **_common(model, state_dict, data, train_config, progress),
        "kind": "last",
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "ema_state_dict": ema_state_dict,
        "lookahead_state": lookahead_state,
        "rng": rng,
        "history": history,
    }


def _common(
    model: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    data: dict[str, Any],
    train_config: dict[str, Any],
    progress: dict[str, Any],
) -> dict[str, Any]:
    return {
        "model": model,
        "state_dict": state_dict,
        "data": data,
        "train_config": train_config,
        "progress": progress,
    }


class SavedRun:
    """The entries of a loaded checkpoint dict, read by name (see the module docstring). Each
    is looked up when asked for, so a missing one raises KeyError where it is needed; the
    optional ones of last.pt read as None (history as [])."""

    def __init__(self, ckpt: dict[str, Any]) -> None:
        self.ckpt = ckpt

    @property
    def kind(self) -> str | None:
        return self.ckpt.get("kind")

    @property
    def model(self) -> dict[str, Any]:
        return self.ckpt["model"]

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ckpt["state_dict"]

    @property
    def data(self) -> dict[str, Any]:
        return self.ckpt["data"]

    @property
    def train_config(self) -> dict[str, Any]:
        return self.ckpt["train_config"]

    @property
    def train_config_or_empty(self) -> dict[str, Any]:
        """train_config, or {} for a file without one."""
        return self.ckpt.get("train_config") or {}

    @property
    def progress(self) -> dict[str, Any]:
        return self.ckpt["progress"]

    @property
    def optimizer(self) -> dict[str, Any]:
        return self.ckpt["optimizer"]

    @property
    def scheduler(self) -> dict[str, Any] | None:
        return self.ckpt.get("scheduler")

    @property
    def scaler(self) -> dict[str, Any] | None:
        return self.ckpt.get("scaler")

    @property
    def ema_state_dict(self) -> dict[str, Any] | None:
        return self.ckpt.get("ema_state_dict")

    @property
    def lookahead_state(self) -> dict[str, torch.Tensor] | None:
        return self.ckpt.get("lookahead_state")

    @property
    def rng(self) -> dict[str, Any]:
        return self.ckpt["rng"]

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.ckpt.get("history", [])


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


_TORCHSCRIPT_EXPORT = (
    "{path} is a TorchScript export, not a checkpoint; give the run's best.pt or last.pt (or an "
    ".onnx export to evaluate and predict)"
)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (it holds code: a `constants.pkl` beside the pickled module).
    Checked before torch.load, because torch 2.5 hands such a file to torch.jit.load even with
    weights_only=True (torch 2.6 and later refuse it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False  # not a zip archive, or unreadable: torch.load tells which


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    """torch.load(weights_only=True), each way it can fail told as one CheckpointError."""
    if _is_torchscript(path):
        raise CheckpointError(_TORCHSCRIPT_EXPORT.format(path=path))
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
            raise CheckpointError(_TORCHSCRIPT_EXPORT.format(path=path)) from None
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

    saved = SavedRun(ckpt)
    check_model_config(saved.model, str(path))
    try:
        model = build_model(saved.model)
    except CifarnetError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model config is malformed ({exc})") from None
    state = saved.state_dict
    if saved.ema_state_dict:
        # torch's AveragedModel: the averaged network's entries under "module.", and a counter
        state = {
            name.removeprefix("module."): value
            for name, value in saved.ema_state_dict.items()
            if name.startswith("module.")
        }
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = one_line(exc)
        raise CheckpointError(
            f"{path}: weights do not fit model {saved.model.get('name')!r} "
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
