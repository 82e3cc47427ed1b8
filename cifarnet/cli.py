"""The `cifarnet` command line: parse flags, call the library, render the results.

Nothing here imports torch at module level, so `cifarnet --help` stays instant; each command
imports the library modules it needs when it runs.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet import __version__
from cifarnet.config import DATASETS, PRECISIONS, RECIPE_HELP, SCHEDULES
from cifarnet.errors import CifarnetError

app = typer.Typer(
    name="cifarnet",
    help="Train, evaluate, run and export residual networks on CIFAR-100 and CIFAR-10.\n\n"
    "Example: cifarnet train --epochs 70",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cifarnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Train, evaluate, run and export residual networks on CIFAR-100 and CIFAR-10."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


@contextlib.contextmanager
def handle_errors(debug: bool = False) -> Iterator[None]:
    """CifarnetError -> one red line on stderr and its exit code (1, or 130/143 when
    interrupted); the traceback only with --debug."""
    try:
        yield
    except CifarnetError as exc:
        if debug:
            traceback.print_exc()
        _console(stderr=True).print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _console(stderr=True).print("[bold red]aborted[/] (the last saved checkpoint is intact)")
        raise typer.Exit(130) from None


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder holding cifar-100-python/ (or its .tar.gz); default $CIFARNET_DATA, "
        "else ~/.cache/cifarnet.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.", show_default="auto")
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help=f"{', '.join(PRECISIONS)}: auto is bf16 on CUDA and bf16-capable CPUs.",
        show_default="auto",
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="One plain line per epoch.")]


@app.command(
    epilog="Examples: cifarnet train --epochs 70 · cifarnet train --recipe reference · "
    "cifarnet train --resume runs/train/last.pt --epochs 100"
)
def train(
    recipe: Annotated[
        str | None,
        typer.Option(
            help="; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items()) + ".",
            show_default="default",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help=" or ".join(DATASETS) + ".", show_default="cifar100")
    ] = None,
    data_dir: DataDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Registered model (see `cifarnet models`).", show_default="from recipe"),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train.", show_default="70")] = None,
    time: Annotated[
        float | None,
        typer.Option(
            "--time",
            help="Wall-clock training budget in minutes; the lr schedule is "
            "fitted to it and --epochs is ignored.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch size.", show_default="256")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate.", show_default="from recipe")
    ] = None,
    momentum: Annotated[
        float | None, typer.Option(help="SGD momentum.", show_default="0.9")
    ] = None,
    nesterov: Annotated[
        bool | None,
        typer.Option(
            "--nesterov/--no-nesterov", help="Nesterov momentum.", show_default="from recipe"
        ),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="L2 weight decay.", show_default="from recipe")
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing in [0, 1).", show_default="from recipe")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help=f"{', '.join(SCHEDULES)}.", show_default="from recipe")
    ] = None,
    warmup_epochs: Annotated[
        float | None,
        typer.Option(help="Linear warm-up length in epochs.", show_default="from recipe"),
    ] = None,
    ema: Annotated[
        float | None,
        typer.Option(
            "--ema",
            help="EMA decay of the weights used for evaluation (0 = off).",
            show_default="from recipe",
        ),
    ] = None,
    cutout: Annotated[
        int | None,
        typer.Option(help="Cutout square size in pixels (0 = off).", show_default="from recipe"),
    ] = None,
    val_size: Annotated[
        int | None,
        typer.Option(
            help="Validation images held out of train (stratified); 0 trains on all 50k.",
            show_default="5000",
        ),
    ] = None,
    subset: Annotated[
        int | None,
        typer.Option(
            help="Train on a class-balanced subset of N images (smoke runs).", show_default=False
        ),
    ] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    compile: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile", help="torch.compile the model.", show_default="on for CUDA"
        ),
    ] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic", help="Deterministic algorithms only.", show_default=False),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.", show_default="0")] = None,
    runs_dir: Annotated[
        str | None, typer.Option(help="Where run folders go.", show_default="runs")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run folder name (never overwritten: name-2, ...).", show_default="train"
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue a run from its last.pt.", show_default=False)
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="JSON file of settings (a run's config.json works); flags override it.",
            show_default=False,
        ),
    ] = None,
    download: Annotated[
        bool | None,
        typer.Option(
            "--download/--no-download",
            help="Download the dataset when absent.",
            show_default="download",
        ),
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train a model; writes runs/<name>/ (config, metrics.csv, best.pt, last.pt, plot)."""
    flags = {
        "recipe": recipe,
        "dataset": dataset,
        "model": model,
        "epochs": epochs,
        "time_minutes": time,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "ema_decay": ema,
        "cutout": cutout,
        "val_size": val_size,
        "subset": subset,
        "device": device,
        "precision": precision,
        "compile": compile,
        "deterministic": deterministic,
        "seed": seed,
        "runs_dir": runs_dir,
        "name": name,
        "download": download,
        "data_dir": str(data_dir) if data_dir is not None else None,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    with handle_errors(debug):
        from cifarnet.config import read_config_file, resolve_config

        if resume is not None:
            if config is not None:
                given = {**read_config_file(config), **given}
            train_config, overrides = None, given
        else:
            train_config, overrides = resolve_config(given, config), None
        from cifarnet.cli_progress import make_train_callbacks
        from cifarnet.trainer import train as run_training

        callbacks = make_train_callbacks(_console(), quiet)
        run_training(train_config, resume=resume, overrides=overrides, callbacks=callbacks)


@app.command()
def models() -> None:
    """List the registered models with their parameter counts."""
    from rich.table import Table

    from cifarnet.models import count_parameters, create_model, list_models, model_description

    table = Table(title="cifarnet models (100 classes)")
    table.add_column("name", style="bold")
    table.add_column("parameters", justify="right")
    table.add_column("description")
    for name in list_models():
        params = count_parameters(create_model(name, 100))
        table.add_row(name, f"{params:,}", model_description(name))
    _console().print(table)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cifarnet")


if __name__ == "__main__":
    sys.exit(main())
