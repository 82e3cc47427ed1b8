"""What a failed run leaves behind: a new run that failed before its first checkpoint leaves no
folder, and a full disk at last.pt leaves best.pt and metrics.csv in agreement."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from cifarnet.errors import OutputError, TrainingInterrupted
from cifarnet.io.run_folder import RunPaths, remove_unfinished_run


@contextlib.contextmanager
def removed_if_unfinished(paths: Callable[[], RunPaths | None]) -> Iterator[None]:
    """Around a new run: when it fails (an error, a crash, a second Ctrl-C) before it saved a
    checkpoint, remove the files it wrote and its folder (`paths()`: None before the folder is
    made). A run stopped by a signal saved last.pt: its folder is kept, to resume."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except BaseException:
        folder = paths()
        if folder is not None:
            with contextlib.suppress(OSError):
                remove_unfinished_run(folder)
        raise


def last_not_saved(
    exc: OutputError, epoch: int, improved: bool, append_row: Callable[[], None]
) -> OutputError:
    """The error for a last.pt of `epoch` that could not be written (a full disk). best.pt and
    metrics.csv must agree: when best.pt already holds this epoch (`improved`), the epoch's row
    is appended (`append_row`) too. The message says what each file now holds."""
    before = f"epoch {epoch - 1}" if epoch > 1 else "no epoch"
    if not improved:
        kept = f"best.pt, last.pt and metrics.csv keep {before}"
    else:
        try:
            append_row()
            kept = f"best.pt and metrics.csv hold epoch {epoch}, last.pt {before}"
        except OSError:
            kept = (
                f"best.pt holds epoch {epoch}, which metrics.csv could not record; "
                f"last.pt and metrics.csv keep {before}"
            )
    redo = f"resuming from last.pt redoes epoch {epoch}" if epoch > 1 else "rerun it"
    return OutputError(f"{exc}; {kept}; {redo}")
