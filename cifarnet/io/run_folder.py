"""A training run's folder: its file names, creating it, and its JSON files.

The folder holds config.json (the settings, with a "_meta" block of how the run went), metrics.csv
(one row per epoch), best.pt, last.pt, results.png and, once the run ends, summary.json. The two
JSON files are written and config.json is read back here, and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarnet.errors import OutputError
from cifarnet.io.atomic import atomic_write
from cifarnet.io.checkpoint import versions
from cifarnet.io.stale import sweep


@dataclass
class RunPaths:
    """The files of the run in `folder`. `writes` is False on the processes of a distributed
    run other than rank 0: they know rank 0's folder, and write nothing into it."""

    folder: Path
    writes: bool = True

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.csv"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def plot(self) -> Path:
        return self.folder / "results.png"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"


def new_run_folder(runs_dir: str | os.PathLike, name: str) -> Path:
    """runs_dir/name, or name-2, name-3, ... : an existing run is never overwritten."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            folder = root / (name if i == 1 else f"{name}-{i}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(f"cannot create a run folder in {root}: {exc.strerror or exc}") from None
    raise OutputError(f"too many runs named {name!r} in {root}; pass --name")


def check_runs_dir(runs_dir: str | os.PathLike) -> None:
    """Refuse (OutputError) a --runs-dir that is a file, or that cannot be created or written
    in, before the data is loaded: the run could never be saved."""
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise OutputError(f"--runs-dir {root} is a file, not a folder; give a folder")
    existing = root.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"--runs-dir {root} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        action = "written in" if existing == root.absolute() else "created"
        raise OutputError(f"--runs-dir {root} cannot be {action}: {existing} is not writable")


def remove_unfinished_run(paths: RunPaths) -> bool:
    """After a new run failed before saving any checkpoint: remove the files it wrote
    (config.json, an empty metrics.csv, ...) and its folder, so that the newest-run default of
    `evaluate` and the numbering of later runs are as if it had never started. A folder that
    holds anything else is left; True when the folder is gone."""
    if not paths.writes or paths.last.exists() or paths.best.exists():
        return False
    for path in (paths.config, paths.metrics, paths.plot, paths.summary):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    sweep(paths.folder, now=float("inf"))  # this run's own temporaries, whatever their age
    try:
        paths.folder.rmdir()
    except OSError:
        return False
    return True


def write_config(paths: RunPaths, settings: dict[str, Any], meta: dict[str, Any]) -> None:
    """config.json: the run's settings (TrainConfig.to_dict()) and a "_meta" block: the
    versions, the command line, then `meta` (device, precision, data source, image counts...)."""
    if not paths.writes:
        return
    payload = {
        **settings,
        "_meta": {**versions(), "command": shlex.join(sys.argv), **meta},
    }
    _write_json(paths.config, payload)


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> None:
    """summary.json: the finished run's numbers."""
    if paths.writes:
        _write_json(paths.summary, summary)


def write_plot(paths: RunPaths, history: list[dict[str, Any]]) -> None:
    """results.png from the metrics rows so far; nothing before the first epoch ends."""
    from cifarnet.io.plots import plot_history

    if history and paths.writes:
        plot_history(history, paths.plot)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def run_data_source(folder: Path, dataset: str) -> str | None:
    """Where the run in `folder` found its `dataset`, from its config.json; None when `folder`
    is not such a run. An export carries no local paths, but one saved in its run's folder (the
    default place) finds the run's data this way."""
    try:
        config = json.loads(RunPaths(folder).config.read_text())
        if config.get("dataset") == dataset:
            source = config.get("_meta", {}).get("data_source") or config.get("data_dir")
            return source if isinstance(source, str) else None
    except (OSError, ValueError, AttributeError):  # not a run's config.json
        pass
    return None
