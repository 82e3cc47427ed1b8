"""The error family the library raises; the CLI turns each into one line and exit code 1."""

from __future__ import annotations

import re


class CifarnetError(Exception):
    """A failure the user can act on. The message is one line that says what to do."""

    exit_code = 1
    # In a distributed run every process meets most errors alike (a bad setting, a stop), and
    # rank 0 alone reports them; an error of one process's own is reported by that process.
    own_to_process = False


class ConfigError(CifarnetError):
    """A bad option value, unknown name or unreadable config file."""


class DataError(CifarnetError):
    """Dataset files missing, incomplete or malformed."""


class CheckpointError(CifarnetError):
    """A checkpoint that cannot be read, is not ours, or does not fit."""


class DivergenceError(CifarnetError):
    """The training loss became NaN or infinite."""


class DeviceError(CifarnetError):
    """The requested device is absent or ran out of memory."""

    own_to_process = True


class DistributedError(CifarnetError):
    """The processes of a distributed run could not all start, or lost one another."""

    own_to_process = True


class OutputError(CifarnetError):
    """An output could not be written, or would overwrite an existing file."""


class ExportError(CifarnetError):
    """An exported model failed to write or to match the PyTorch model."""


class CifarnetWarning(UserWarning):
    """Something the user should know that does not stop the command (a dataset that is not
    the official one, a --topk above the class count). The CLI shows these as one line each;
    other libraries' warnings only with --debug."""


class TrainingInterrupted(CifarnetError):
    """SIGINT/SIGTERM, or a closed output (as SIGPIPE), stopped training after last.pt was
    saved at a safe point."""

    def __init__(self, message: str, signal_number: int, checkpoint: str) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.checkpoint = checkpoint
        # shell convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)
        self.exit_code = 128 + signal_number


class Aborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM during training: stop at once, without saving."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.exit_code = 128 + signal_number  # as TrainingInterrupted


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_name(kind: str, value: str, choices: list[str] | tuple[str, ...]) -> ConfigError:
    """The standard 'unknown X' error: lists the valid names and suggests the closest."""
    return ConfigError(
        f"unknown {kind} {value!r}{did_you_mean(value, choices)}; choose one of: "
        + ", ".join(choices)
    )


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (torch's run over several), without terminal colour
    codes (torch.onnx colours its messages); a long one is cut to its first sentence and at
    most `limit` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split()) or type(exc).__name__
    if len(text) > limit:
        text = text.split(". ")[0]
    return text[: limit - 3] + "..." if len(text) > limit else text
