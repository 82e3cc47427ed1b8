"""The commands over several runs: `compare` (a table of run folders; runs that differ only by
seed grouped) and `tune` (a hyper-parameter search). Each calls its library function and renders
the result; nothing here imports torch, pandas or optuna at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet.cli.app import app, console, handle_errors
from cifarnet.cli.options import DebugOpt, ForceOpt, out_option

_FIGURE_FORMATS = {
    "best_val_top1": "{:.2f}",
    "best_epoch": "{:.0f}",
    "test_top1": "{:.2f}",
    "test_top5": "{:.2f}",
    "train_seconds": "{:.0f}",
    "images_per_second": "{:,.0f}",
}
_HEADERS = {
    "best_val_top1": "best val top-1",
    "best_epoch": "at epoch",
    "test_top1": "test top-1",
    "test_top5": "test top-5",
    "train_seconds": "train s",
    "images_per_second": "images/s",
}


def _cell(name: str, value: Any) -> str:
    if value is None or value == "":
        return ""
    if name in _FIGURE_FORMATS and isinstance(value, int | float):
        return _FIGURE_FORMATS[name].format(value)
    if name == "parameters" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _mean_std(name: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    text = _cell(name, mean)
    return f"{text} ± {_cell(name, std)}" if std is not None else text


def comparison_table(comparison: Any) -> Any:
    """The rich table of a Comparison: its runs, then one "mean ± std" row per group."""
    from rich.table import Table

    from cifarnet.tasks.compare import FIGURES

    plain = ("run", "status", "group", "model", "recipe", "budget", "seed", "parameters", "epochs")
    table = Table(title=f"runs (sorted by {comparison.sort})")
    for name in (*plain, *FIGURES):
        numeric = name in FIGURES or name in ("parameters", "epochs", "group", "seed")
        table.add_column(_HEADERS.get(name, name), justify="right" if numeric else "left")
    styles = {"unfinished": "yellow", "broken": "red"}
    for run in comparison.runs:
        row = run.row
        status = run.status + (f": {run.reason}" if run.reason else "")
        cells = [_cell(n, row.get(n)) for n in plain]
        cells[1] = status
        table.add_row(
            *cells, *(_cell(n, row.get(n)) for n in FIGURES), style=styles.get(run.status)
        )
    for group in comparison.groups:
        first = group.runs[0].row
        seeds = ",".join(str(s) for s in group.seeds)
        head = [f"group {group.number}", f"mean ± std of {len(group.runs)}", str(group.number)]
        head += [_cell(n, first.get(n)) for n in ("model", "recipe", "budget")]
        head += [seeds, _cell("parameters", first.get("parameters")), ""]
        figures = [_mean_std(n, group.mean[n], group.std[n]) for n in FIGURES]
        table.add_row(*head, *figures, style="bold", end_section=False)
    return table


@app.command(
    epilog="Examples: cifarnet compare runs/* · cifarnet compare 'runs/fast*' --sort "
    "best_val_top1 --out compare.csv --plot curves.png"
)
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="Run folders or glob patterns (e.g. runs/* or 'runs/fast*').", show_default=False
        ),
    ],
    sort: Annotated[
        str,
        typer.Option(
            help="Column to sort by: test_top1, best_val_top1, test_top5, images_per_second, "
            "train_seconds, parameters, run, model, recipe, ... (accuracies and images/s "
            "largest first)."
        ),
    ] = "test_top1",
    ascending: Annotated[
        bool | None,
        typer.Option(
            "--ascending/--descending",
            help="Sort order, when not the column's usual one.",
            show_default=False,
        ),
    ] = None,
    out: out_option("Write the table (and the groups' mean and std rows) to this .csv.") = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the runs' validation curves into this .png/.pdf/.svg.", show_default=False
        ),
    ] = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare run folders: a table of their results; runs that differ only by seed are
    grouped with mean ± standard deviation; unfinished and broken runs are listed as such."""
    with handle_errors(debug):
        from cifarnet.tasks.compare import compare as run_compare

        comparison = run_compare(
            runs, sort=sort, ascending=ascending, out=out, plot=plot, force=force
        )
        out_console = console()
        out_console.print(comparison_table(comparison))
        for path in (out, plot):
            if path is not None:
                out_console.print(f"wrote {path}", markup=False)


def train_over_seeds(
    config: Any, resume: Path | None, seeds: str | None, repeat: int | None, quiet: bool
) -> None:
    """`train --seeds/--repeat`: each seed's run rendered as a plain `train`'s, then the
    group's table. Bad seeds are refused before any training."""
    from cifarnet.errors import ConfigError
    from cifarnet.tasks.repeat import parse_seeds, train_seeds

    if resume is not None:
        raise ConfigError("--seeds/--repeat start new runs; they cannot be used with --resume")
    seed_list = parse_seeds(seeds, repeat, first=config.seed)
    from cifarnet.cli.progress import make_train_callbacks

    out = console()

    def callbacks_for(seed: int) -> Any:
        out.print(f"seed {seed} ({seed_list.index(seed) + 1} of {len(seed_list)})", markup=False)
        return make_train_callbacks(out, quiet)

    group = train_seeds(config, seed_list, callbacks_for=callbacks_for)
    from cifarnet.tasks.compare import compare as run_compare

    out.print(comparison_table(run_compare([group["folder"]], sort="seed")))
    folder = Path(group["folder"])
    out.print(f"wrote {folder / 'group.json'} and {folder / 'group.csv'}", markup=False)
