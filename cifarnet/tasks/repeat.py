"""One recipe over several seeds: `train_seeds` trains the same settings once per seed, each a
normal run folder, and writes the group's summary (mean and standard deviation of each summary
figure) as group.json and group.csv.

The group's folder holds its runs: runs/<name>/seed-0/, runs/<name>/seed-1/, ... beside
runs/<name>/group.json and group.csv. `cifarnet compare runs/<name>` compares its runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarnet.errors import ConfigError

GROUP_FILE = "group.json"


def parse_seeds(text: str | None = None, repeat: int | None = None, first: int = 0) -> list[int]:
    """The seeds of `--seeds 0,1,2` or `--repeat N` (first, first + 1, ...). ConfigError for
    both or neither given, a seed that is not a whole number >= 0, a duplicate, or N < 1."""
    if (text is None) == (repeat is None):
        raise ConfigError("give either --seeds or --repeat, not both")
    if repeat is not None:
        if repeat < 1:
            raise ConfigError(f"--repeat must be at least 1, got {repeat}")
        return list(range(first, first + repeat))
    parts = [p.strip() for p in str(text).split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"--seeds {text!r}: give whole numbers >= 0 separated by commas (0,1,2)")
    seeds = [int(p) for p in parts]
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise ConfigError(
            f"--seeds {text!r} repeats {', '.join(map(str, duplicates))}; each seed once"
        )
    return seeds


def group_summary(summaries: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """group.json's content from the runs' summaries: each figure's mean and sample std."""
    from cifarnet.tasks.compare import _summary_columns, mean_std

    rows = [_summary_columns(s) for s in summaries]
    mean, std = mean_std(rows)
    return {
        "runs": [Path(s["run_dir"]).name for s in summaries],
        "seeds": seeds,
        "count": len(summaries),
        "mean": mean,
        "std": std,
        "per_run": [
            {"run": Path(s["run_dir"]).name, "seed": seed, **row}
            for s, seed, row in zip(summaries, seeds, rows, strict=True)
        ],
    }


def write_group(folder: Path, group: dict[str, Any], settings: dict[str, Any]) -> None:
    """group.json (the summary and the shared settings) and group.csv (one row per run, then
    the mean and std rows)."""
    from cifarnet.io.atomic import atomic_write
    from cifarnet.io.tables import write_csv
    from cifarnet.tasks.compare import FIGURES

    text = json.dumps({**group, "settings": settings}, indent=2) + "\n"
    atomic_write(folder / GROUP_FILE, lambda f: f.write(text.encode()))
    rows = [{"kind": "run", **r} for r in group["per_run"]]
    seeds = " ".join(map(str, group["seeds"]))
    rows += [{"kind": k, "run": folder.name, "seed": seeds, **group[k]} for k in ("mean", "std")]
    write_csv(rows, folder / "group.csv", ["kind", "run", "seed", *FIGURES])


def train_seeds(
    config: Any,
    seeds: list[int],
    *,
    callbacks_for: Callable[[int], Any] | None = None,
    on_run_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train `config` (a TrainConfig) once per seed, into runs_dir/<name>/seed-<s>/ (name
    default "seeds", never overwritten: seeds-2, ...), then write and return the group summary
    (group.json, group.csv in that folder; its "folder" key names it). `callbacks_for(seed)`
    gives each run its callbacks; `on_run_end(seed, summary)` is told of each finished run.
    Under a time budget each run gets the whole budget."""
    from cifarnet.io.run_folder import new_run_folder
    from cifarnet.training.trainer import train

    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds}")
    config.replace(seed=seeds[0])  # a bad seed or setting fails before any folder is made
    folder = new_run_folder(config.runs_dir, config.name or "seeds")
    summaries = []
    for seed in seeds:
        run_config = config.replace(seed=seed, runs_dir=str(folder), name=f"seed-{seed}")
        callbacks = callbacks_for(seed) if callbacks_for is not None else None
        try:
            summary = train(run_config, callbacks=callbacks)
        finally:
            close = getattr(callbacks, "close", None)
            if close is not None:
                close()
        summaries.append(summary)
        if on_run_end is not None:
            on_run_end(seed, summary)
    group = group_summary(summaries, seeds)
    settings = {k: v for k, v in config.to_dict().items() if k not in ("seed", "name")}
    write_group(folder, group, settings)
    return {**group, "folder": os.fspath(folder)}
