"""TrainCallbacks: the hooks through which a run reports its progress (the CLI renders them)."""

from __future__ import annotations

from typing import Any


class TrainCallbacks:
    """Hooks for progress display. The library calls them; it never prints."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int) -> None: ...

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None: ...

    def on_epoch_end(self, row: dict[str, Any]) -> None: ...

    def on_status(self, message: str) -> None: ...

    def on_test_progress(self, images_done: int, images: int) -> None:
        """The final test pass has evaluated `images_done` of its `images`."""

    def on_end(self, summary: dict[str, Any]) -> None: ...
