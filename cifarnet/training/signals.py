"""Stopping a run cleanly: SIGINT/SIGTERM become a stop flag read at safe points, and a closed
output (a broken pipe) stops the run as SIGPIPE would, after last.pt is saved."""

from __future__ import annotations

import signal
import threading
from typing import Any

from cifarnet.errors import Aborted
from cifarnet.training.callbacks import TrainCallbacks

# a closed output stops a run as this signal would (Windows has no SIGPIPE: the number is the
# one Unix shells report, as exit code 128 + 13)
SIGPIPE = getattr(signal, "SIGPIPE", 13)


class StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next safe point; a second
    one aborts at once (the last saved last.pt stays intact: saves are atomic)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        # in a distributed run, the stop its processes agreed on at the last sync point: the
        # one they act on, as a Ctrl-C can reach one process just after a sync point and
        # another just before it
        self.agreed: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_number is not None:
            raise Aborted(signum)
        self.signal_number = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def signal_name(signum: int) -> str:
    """The signal as a stop message names it."""
    if signum == SIGPIPE:
        return "SIGPIPE (its output was closed)"
    return signal.Signals(signum).name


class OutputGuard(TrainCallbacks):
    """The caller's callbacks, but a closed output (`cifarnet train | head`: a write raises
    BrokenPipeError) does not kill the run with its work unsaved: the callbacks fall silent and
    the run stops at the next safe point as if signalled SIGPIPE, saving last.pt."""

    def __init__(self, inner: TrainCallbacks, stop: StopFlag) -> None:
        self._inner, self._stop, self._lost = inner, stop, False

    def _call(self, name: str, *args: Any) -> None:
        if self._lost:
            return
        try:
            getattr(self._inner, name)(*args)
        except BrokenPipeError:
            self._lost = True
            if self._stop.signal_number is None:
                self._stop.signal_number = SIGPIPE

    def on_start(self, info: dict[str, Any]) -> None:
        self._call("on_start", info)

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self._call("on_epoch_start", epoch, steps)

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        self._call("on_step", step, steps, stats)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self._call("on_epoch_end", row)

    def on_status(self, message: str) -> None:
        self._call("on_status", message)

    def on_test_progress(self, images_done: int, images: int) -> None:
        self._call("on_test_progress", images_done, images)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._call("on_end", summary)
