"""The commands over several runs: `compare` (a table of run folders; runs that differ only by
seed grouped), `tune` (a hyper-parameter search) and the loop of `train --seeds`. Each calls its
library function and renders the result; nothing here imports torch, pandas or optuna at module
level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet.cli.app import app, console, handle_errors
from cifarnet.cli.options import DebugOpt, ForceOpt, QuietOpt, out_option
from cifarnet.cli.train_command import with_setting_options

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
    from cifarnet.cli.render import shown

    # text from the run folder (its name, its config): no markup, no control characters, and
    # a folder name that is not UTF-8 shown with U+FFFD (a UTF-8 stream refuses its surrogates)
    return shown(value)


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
        status = run.status + (f": {_cell('reason', run.reason)}" if run.reason else "")
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


def trials_table(result: Any) -> Any:
    """The rich table of a TuneResult's trials, best first."""
    from rich.table import Table

    table = Table(title=f"study {result.study}: {len(result.rows)} trials (best first)")
    for name in ("trial", "state", "val top-1", *result.params, "epochs", "run"):
        table.add_column(name, justify="left" if name in ("state", "run") else "right")
    best = result.best["trial"] if result.best else None
    for row in result.rows:
        value = row["val_top1"]
        state = row["state"] + (" (base settings)" if row.get("base") else "")
        cells = [str(row["trial"]), state, "" if value is None else f"{value:.2f}"]
        cells += [_param_cell(row[p]) for p in result.params]
        cells += ["" if row["epochs"] is None else str(row["epochs"]), row["run"]]
        style = (
            "bold green"
            if row["trial"] == best
            else ("dim" if row["state"] != "complete" else None)
        )
        table.add_row(*cells, style=style)
    return table


def _param_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@app.command(
    epilog="Examples: cifarnet tune --recipe fast --time 2 --trials 8 --search "
    "lr=0.05:0.8:log --search weight_decay=1e-4:2e-3:log · cifarnet tune --space space.yaml "
    "--storage postgresql://host/db (start the same command on more machines to search "
    "together)"
)
@with_setting_options
def tune(
    *,
    search: Annotated[
        list[str] | None,
        typer.Option(
            help="A setting's range or choices: lr=0.01:0.4:log, label_smoothing=0:0.2, "
            "batch_size=256,512 (repeat the option for more settings).",
            show_default=False,
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="JSON or YAML file: setting -> {low, high, log, step}, a list of choices, or "
            "'LOW:HIGH[:log]'. --search entries override it.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[
        int, typer.Option(help="Finished trials (complete or pruned) the study should hold.")
    ] = 20,
    study: Annotated[
        str, typer.Option(help="Study name; its trials go to runs/<study>/trial-NNNN/.")
    ] = "tune",
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL shared by all workers (e.g. sqlite:///tune.db, "
            "postgresql://...).",
            show_default="sqlite:///runs/<study>/study.db",
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option(help="Stop trials whose validation curve falls below the median.")
    ] = True,
    best_config: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the best settings as a --config file.",
            show_default="runs/<study>/best_config.json",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file of base settings; flags override it.", show_default=False),
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    **settings: Any,
) -> None:
    """Search hyper-parameters with Optuna: each trial a run folder trained under --time or
    --epochs, poor trials pruned, the objective the validation top-1 (never the test set).
    Ctrl-C keeps the finished trials; rerunning the command continues the study."""
    with handle_errors(debug):
        from cifarnet.config.settings import resolve_config
        from cifarnet.tasks import tune as tuning

        tuning.import_optuna()
        given = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
        base = resolve_config({k: v for k, v in given.items() if v is not None}, config)
        file_space = tuning.read_space_file(space) if space is not None else None
        params = tuning.build_space(base, file_space, search)
        result = tuning.tune(
            base,
            params,
            trials=trials,
            study_name=study,
            storage=storage,
            prune=prune,
            best_config=best_config,
            callbacks_for=_trial_callbacks(quiet),
        )
        _render_tune(result)


def _trial_callbacks(quiet: bool) -> Any:
    from cifarnet.cli.progress import make_train_callbacks

    out = console()

    def callbacks_for(number: int, values: dict[str, Any]) -> Any:
        shown = ", ".join(f"{k}={_param_cell(v)}" for k, v in values.items())
        out.print(f"trial {number}: {shown}", markup=False)
        return make_train_callbacks(out, quiet)

    return callbacks_for


def _render_tune(result: Any) -> None:
    out = console()
    out.print(trials_table(result))
    if result.best_config is not None:
        best = result.best
        out.print(
            f"best: trial {best['trial']}, validation top-1 {best['val_top1']:.2f}%; settings "
            f"written to {result.best_config} (cifarnet train --config {result.best_config})",
            markup=False,
        )
    if result.interrupted:
        from rich.markup import escape

        console(stderr=True).print(
            f"[bold red]aborted[/] ({escape(str(result.ran))} trial(s) finished in this run are "
            "kept; rerun the same command to continue the study)"
        )
        raise typer.Exit(130)
