"""Comparing run folders: one row per run (finished, unfinished or broken), runs of the same
settings that differ only by seed grouped with mean and standard deviation, a CSV and a plot of
the validation curves.

A run folder is read, never written: summary.json for a finished run, else config.json and
metrics.csv for one in progress (or stopped); a folder whose files cannot be read is listed as
broken with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.errors import ConfigError
from cifarnet.io.untrusted import printable

RUN_FILES = ("config.json", "metrics.csv", "summary.json")
# the files of a folder of runs: train --seeds's group, tune's study
GROUP_FILES = ("group.json", "study.json")
# the settings that do not make two runs different experiments
NOT_SETTINGS = ("seed", "name", "runs_dir", "tensorboard")
# figures averaged over a group, in the table's order
FIGURES = (
    "best_val_top1",
    "best_epoch",
    "test_top1",
    "test_top5",
    "train_seconds",
    "images_per_second",
)
COLUMNS = (
    "run",
    "status",
    "group",
    "model",
    "recipe",
    "budget",
    "seed",
    "parameters",
    "epochs",
    *FIGURES,
)
# sorted with the largest first; the others smallest first
DESCENDING = ("best_val_top1", "test_top1", "test_top5", "images_per_second", "epochs")


@dataclass
class RunRecord:
    """One run folder as compare reads it. `status`: finished, unfinished or broken."""

    folder: Path
    status: str
    row: dict[str, Any]
    reason: str = ""
    settings: dict[str, Any] | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Group:
    """Finished runs of the same settings that differ only by seed."""

    number: int
    runs: list[RunRecord]
    mean: dict[str, float | None]
    std: dict[str, float | None]

    @property
    def seeds(self) -> list[Any]:
        return [r.row.get("seed") for r in self.runs]


@dataclass
class Comparison:
    """What `compare` returns: the runs in the sorted order, and the groups of two or more."""

    runs: list[RunRecord]
    groups: list[Group]
    sort: str

    def rows(self) -> list[dict[str, Any]]:
        """The CSV's rows: each run (kind "run"), then each group's "mean" and "std" rows."""
        out = [{"kind": "run", **{c: r.row.get(c) for c in COLUMNS}} for r in self.runs]
        for g in self.groups:
            first = g.runs[0].row
            for kind, values in (("mean", g.mean), ("std", g.std)):
                row = {c: first.get(c) for c in ("model", "recipe", "budget", "parameters")}
                row |= {"run": f"group {g.number}", "group": g.number, "status": "finished"}
                row["seed"] = " ".join(str(s) for s in g.seeds)
                out.append({"kind": kind, **row, **values})
        return out


def expand_runs(patterns: list[str | os.PathLike]) -> list[Path]:
    """Folders from paths and glob patterns (a pattern's matches that are not folders are left
    out). ConfigError for a pattern that matches nothing, a path that does not exist or is not
    a folder, or a folder with none of the run files."""
    folders: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
            if not matches:
                raise ConfigError(f"{pattern}: no folder matches")
        else:
            matches = [Path(pattern)]
        for folder in [run for match in matches for run in _group_members(match)]:
            _check_run_folder(folder)
            if folder.resolve() not in {f.resolve() for f in folders}:
                folders.append(folder)
    if not folders:
        raise ConfigError("give at least one run folder (e.g. runs/*)")
    return folders


def _group_members(folder: Path) -> list[Path]:
    """A group's folder (`train --seeds`, `tune`: it holds group.json or study.json) stands
    for the run folders inside it; any other path for itself."""
    if folder.is_dir() and any((folder / name).is_file() for name in GROUP_FILES):
        members = sorted(p for p in folder.iterdir() if p.is_dir())
        return [p for p in members if any((p / name).exists() for name in RUN_FILES)]
    return [folder]


def _check_run_folder(folder: Path) -> None:
    if not folder.exists():
        raise ConfigError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give run folders (e.g. runs/*)")
    if not any((folder / name).exists() for name in RUN_FILES):
        raise ConfigError(f"{folder} is not a run folder (it holds none of {', '.join(RUN_FILES)})")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object, or ValueError with a short reason."""
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} unreadable ({type(exc).__name__})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return values


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.csv's rows (none when absent), or ValueError."""
    if not path.exists():
        return []
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return []
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"metrics.csv unreadable ({type(exc).__name__})") from None
    if not {"epoch", "val_top1"} <= set(df.columns):
        raise ValueError("metrics.csv lacks the epoch and val_top1 columns")
    return df.to_dict("records")


def _number(value: Any) -> float | None:
    """A finite number, else None (bools, text and NaN are not figures)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _budget(values: dict[str, Any]) -> str:
    minutes = _number(values.get("time_minutes", values.get("time_budget_minutes")))
    if minutes is not None:
        return f"{minutes:g} min"
    epochs = values.get("epochs")
    return f"{epochs} epochs" if epochs is not None else ""


def read_run(folder: Path) -> RunRecord:
    """The run in `folder`; never raises for its content (a broken run says why)."""
    row: dict[str, Any] = {"run": folder.name}
    try:
        config = _read_json(folder / "config.json") if (folder / "config.json").exists() else {}
        history = _read_metrics(folder / "metrics.csv")
        summary_path = folder / "summary.json"
        summary = _read_json(summary_path) if summary_path.exists() else None
    except ValueError as exc:
        with contextlib.suppress(ValueError):  # what its config.json still tells
            row |= _config_columns(_read_json(folder / "config.json"))
        return RunRecord(folder, "broken", {**row, "status": "broken"}, reason=str(exc))
    curve = [
        (int(r["epoch"]), float(r["val_top1"]))
        for r in history
        if _number(r.get("epoch")) is not None and _number(r.get("val_top1")) is not None
    ]
    row |= _config_columns(config)
    if summary is not None:
        row |= _summary_columns(summary)
        status = "finished"
    elif config:
        row |= _progress_columns(history, curve)
        status = "unfinished"
    else:
        return RunRecord(
            folder, "broken", {**row, "status": "broken"}, reason="no config.json or summary.json"
        )
    row["status"] = status
    settings = {k: v for k, v in config.items() if not k.startswith("_") and k not in NOT_SETTINGS}
    return RunRecord(folder, status, row, settings=settings or None, curve=curve)


def _config_columns(config: dict[str, Any]) -> dict[str, Any]:
    meta = config.get("_meta") if isinstance(config.get("_meta"), dict) else {}
    return {
        "model": config.get("model"),
        "recipe": config.get("recipe"),
        "budget": _budget(config),
        "seed": config.get("seed"),
        "parameters": meta.get("parameters"),
    }


def _summary_columns(summary: dict[str, Any]) -> dict[str, Any]:
    row = {
        "model": summary.get("model"),
        "recipe": summary.get("recipe"),
        "parameters": summary.get("parameters"),
        "epochs": summary.get("epochs"),
        "best_val_top1": _number(summary.get("best_val_top1")),
        "best_epoch": summary.get("best_epoch"),
        "test_top1": _number(summary.get("test_top1")),
        "test_top5": _number(summary.get("test_top5")),
        "train_seconds": _number(summary.get("train_seconds")),
        "images_per_second": _number(summary.get("train_images_per_second")),
    }
    return {k: v for k, v in row.items() if v is not None}


def _progress_columns(history: list[dict[str, Any]], curve: list[tuple[int, float]]) -> dict:
    """What an unfinished run's metrics.csv tells: epochs done, the best validation so far."""
    row: dict[str, Any] = {"epochs": len(history)}
    if curve:
        best_epoch, best = max(curve, key=lambda point: point[1])
        row |= {"best_val_top1": best, "best_epoch": best_epoch}
    if history:
        row["train_seconds"] = _number(history[-1].get("elapsed_seconds"))
        row["images_per_second"] = _number(history[-1].get("images_per_second"))
    return row


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Groups of two or more finished runs whose settings differ only by seed, numbered from
    1 in the order of their first run; each run's row gets its group's number."""
    by_key: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.status == "finished" and run.settings is not None:
            by_key.setdefault(json.dumps(run.settings, sort_keys=True, default=str), []).append(run)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        number = len(groups) + 1
        for run in members:
            run.row["group"] = number
        mean, std = mean_std([r.row for r in members])
        groups.append(Group(number, members, mean, std))
    return groups


def mean_std(rows: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Each figure's mean and sample standard deviation (n - 1) over the rows that have it;
    None where no row has it, std None with a single value."""
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for name in FIGURES:
        values = [v for v in (_number(r.get(name)) for r in rows) if v is not None]
        mean[name] = statistics.fmean(values) if values else None
        std[name] = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def sort_runs(runs: list[RunRecord], column: str, ascending: bool | None = None) -> list[RunRecord]:
    """Runs sorted by `column` (largest first for accuracies, images/s and epochs, else
    smallest first; `ascending` decides when given); rows without a value go last."""
    if column not in COLUMNS:
        from cifarnet.errors import unknown_name

        raise unknown_name("sort column", column, COLUMNS)
    up = column not in DESCENDING if ascending is None else ascending
    present = [r for r in runs if r.row.get(column) not in (None, "")]
    missing = [r for r in runs if r.row.get(column) in (None, "")]
    numeric = all(_number(r.row[column]) is not None for r in present)

    def key(run: RunRecord) -> Any:
        return float(run.row[column]) if numeric else str(run.row[column])

    return sorted(present, key=key, reverse=not up) + missing


def compare(
    runs: list[str | os.PathLike],
    *,
    sort: str = "test_top1",
    ascending: bool | None = None,
    out: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    force: bool = False,
) -> Comparison:
    """Compare the run folders `runs` (paths or glob patterns): rows sorted by `sort`, groups of
    runs that differ only by seed, and optionally a CSV (`out`) and a plot of the validation
    curves (`plot`). ConfigError, before reading anything, for a path that is not a run folder
    or an unknown sort column."""
    if sort not in COLUMNS:
        sort_runs([], sort)  # raises the unknown-column error
    check_outputs(out, plot, force)
    folders = expand_runs(list(runs))
    records = [read_run(folder) for folder in folders]
    groups = group_runs(records)
    comparison = Comparison(sort_runs(records, sort, ascending), groups, sort)
    if out is not None:
        from cifarnet.io.tables import write_csv

        write_csv(comparison.rows(), out, ["kind", *COLUMNS])
    if plot is not None:
        plot_curves(comparison, plot)
    return comparison


PLOT_FORMATS = (".png", ".pdf", ".svg")


def check_outputs(
    out: str | os.PathLike | None, plot: str | os.PathLike | None, force: bool
) -> None:
    """Refuse an --out that is not a .csv, a --plot that is not .png/.pdf/.svg, or either one
    existing (unless `force`), before any work."""
    from cifarnet.io.tables import check_csv_name, check_new_files

    if out is not None:
        check_csv_name(out, "compare.csv")
    if plot is not None and Path(plot).suffix.lower() not in PLOT_FORMATS:
        raise ConfigError(f"--plot {plot}: give a .png, .pdf or .svg file name (e.g. curves.png)")
    check_new_files([p for p in (out, plot) if p is not None], force)


def plot_curves(comparison: Comparison, path: str | os.PathLike) -> None:
    """The validation top-1 curves of the runs, one colour per group (dashed: unfinished)."""
    from matplotlib.figure import Figure

    from cifarnet.io.tables import write_bytes

    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(comparison.runs) + len(comparison.groups))]
    own = iter(colours[len(comparison.groups) :])
    for run in comparison.runs:
        if not run.curve:
            continue
        group = run.row.get("group")
        colour = colours[group - 1] if group else next(own)
        # printable: matplotlib's font code refuses the surrogates of a name that is not UTF-8
        label = printable(run.row["run"]) + (f" (group {group})" if group else "")
        epochs, values = zip(*run.curve, strict=True)
        style = "--" if run.status == "unfinished" else "-"
        marker = "o" if len(epochs) <= 30 else None
        ax.plot(epochs, values, style, color=colour, label=label, marker=marker, markersize=3)
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)", title="Validation accuracy")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".").lower(), dpi=120)
    write_bytes(path, buffer.getvalue())
