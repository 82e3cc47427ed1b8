"""The `cifarnet` command line: parse flags, call the library, render the results.

Nothing here imports torch at module level, so `cifarnet --help` stays instant; each command
imports the library modules it needs when it runs.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet import __version__
from cifarnet.config.settings import DATASETS, PRECISIONS, RECIPE_HELP, SCHEDULES
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
    from cifarnet.cli.render import PipeSafeConsole

    console = PipeSafeConsole(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # logs and pipes: one line per record, never cut at 80 columns (tables take only the
        # width their cells need)
        console.width = 10_000
    return console


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    from rich.markup import escape

    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    with contextlib.suppress(BrokenPipeError):  # stderr's reader has gone: nobody to warn
        _console(stderr=True).print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)


@contextlib.contextmanager
def handle_errors(
    debug: bool = False, abort_note: Callable[[], str] | None = None
) -> Iterator[None]:
    """CifarnetError -> one red line on stderr and its exit code (1, or 128 + the signal number
    when training was stopped: 130, 143, or 141 for a closed output); warnings -> one yellow
    line each. Tracebacks and warnings' source lines only with --debug. `abort_note()` (asked
    when Ctrl-C ends the command) follows "aborted". A closed stderr loses the line, never the
    exit code."""
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _one_line_warning
            yield
    except CifarnetError as exc:
        if debug:
            traceback.print_exc()
        from rich.markup import escape

        # escaped: a message may hold brackets (paths, "pip install 'cifarnet[onnx]'")
        with contextlib.suppress(BrokenPipeError):
            _console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        # files are replaced atomically, so nothing is left half-written
        note = abort_note() if abort_note else ""
        note = f" ({note})" if note else ""
        with contextlib.suppress(BrokenPipeError):
            _console(stderr=True).print(f"[bold red]aborted[/]{note}")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None  # 143 for a second SIGTERM


DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder holding cifar-100-python/ or cifar-10-batches-py/ (or the .tar.gz); "
        "default $CIFARNET_DATA, else ~/.cache/cifarnet.",
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
            show_default="the default recipe",
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
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs to train.", show_default="from recipe: 70, fast 10"),
    ] = None,
    time: Annotated[
        float | None,
        typer.Option(
            "--time",
            help="Wall-clock training budget in minutes; the lr schedule is "
            "fitted to it, and --epochs only sets the warm-up's share (warmup_epochs / epochs).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Training batch size.", show_default="from recipe")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Peak learning rate.", show_default="from recipe")
    ] = None,
    momentum: Annotated[
        float | None, typer.Option(help="SGD momentum.", show_default="from recipe")
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
    zero_init_residual: Annotated[
        bool | None,
        typer.Option(
            "--zero-init-residual/--no-zero-init-residual",
            help="Start each residual block as its shortcut (last BatchNorm scale 0).",
            show_default="from recipe",
        ),
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
    mixup: Annotated[
        float | None,
        typer.Option(
            help="MixUp: blend each image with another, ratio ~ Beta(a, a); a = 0.2 is usual "
            "(0 = off).",
            show_default="from recipe",
        ),
    ] = None,
    cutmix: Annotated[
        float | None,
        typer.Option(
            help="CutMix: paste a box from another image, kept share ~ Beta(a, a); a = 1.0 is "
            "usual (0 = off). With --mixup too, each batch uses one of the two.",
            show_default="from recipe",
        ),
    ] = None,
    resize_from: Annotated[
        int | None,
        typer.Option(
            help="Progressive resizing: start training at this side length (16-32 px), "
            "growing to 32 px by 75% of training.",
            show_default="from recipe",
        ),
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
        "zero_init_residual": zero_init_residual,
        "schedule": schedule,
        "warmup_epochs": warmup_epochs,
        "ema_decay": ema,
        "cutout": cutout,
        "mixup": mixup,
        "cutmix": cutmix,
        "resize_from": resize_from,
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
    # a first Ctrl-C stops training at a safe point, saved; a second one aborts
    callbacks: Any = None  # made inside the block below; once made, they know the run folder

    def abort_note() -> str:
        run_dir = callbacks.info.get("run_dir") if callbacks is not None else None
        if resume is not None or (run_dir and (Path(run_dir) / "last.pt").is_file()):
            return "the last saved checkpoint is intact"
        return "no checkpoint had been saved yet"

    with handle_errors(debug, abort_note=abort_note):
        from cifarnet.config.settings import read_config_file, resolve_config

        if resume is not None:
            if config is not None:
                # a bad value in the file is named as the file's
                resolve_config({}, config, check_model=False)
                given = {**read_config_file(config), **given}
            train_config, overrides = None, given
        else:
            train_config, overrides = resolve_config(given, config), None
        from cifarnet.cli.progress import make_train_callbacks
        from cifarnet.training.trainer import train as run_training

        callbacks = make_train_callbacks(_console(), quiet)
        try:
            run_training(train_config, resume=resume, overrides=overrides, callbacks=callbacks)
        finally:
            callbacks.close()


@app.command(
    epilog="Example: cifarnet models · then cifarnet train --model resnet18 (see train --help)"
)
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


CHECKPOINT_HELP = (
    "best.pt or last.pt of any run{onnx}; default: the newest runs/*/best.pt under the "
    "current folder."
)
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def _resolve_model(path: Path | None) -> Path:
    """The given path, or the newest run's best.pt, saying so on stderr."""
    from cifarnet.tasks.inference import resolve_model_path

    resolved, defaulted = resolve_model_path(path)
    if defaulted:
        _console(stderr=True).print(f"using {resolved} (the newest run's best.pt)", markup=False)
    elif path is not None and resolved != path:
        _console(stderr=True).print(f"using {resolved} (the run's best.pt)", markup=False)
    return resolved


@app.command(
    epilog="Examples: cifarnet evaluate · cifarnet evaluate runs/train/best.pt --split val "
    "--out results/val.csv · cifarnet evaluate runs/train/model.onnx --tta"
)
def evaluate(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help=CHECKPOINT_HELP.format(onnx=", or an exported .onnx file"), show_default=False
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(help=" or ".join(DATASETS) + ".", show_default="the checkpoint's"),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="test; val (the run's own held-out split: its --val-size and --seed); "
            "train (the images the run trained on)."
        ),
    ] = "test",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 1000,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the logits of each image and its mirror image.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Summary CSV (one row); next to it STEM_per_class.csv, STEM_confusion.csv "
            "and STEM_confusion.png.",
            show_default=False,
        ),
    ] = None,
    force: ForceOpt = False,
    download: Annotated[
        bool,
        typer.Option("--download/--no-download", help="Download the dataset when absent."),
    ] = True,
    debug: DebugOpt = False,
) -> None:
    """Loss, top-1/top-5, superclass accuracy, calibration, per-class results, confusions."""
    with handle_errors(debug):
        from cifarnet.cli.progress import counting_bar
        from cifarnet.cli.render import render_evaluation
        from cifarnet.tasks.evaluation import evaluate as run_evaluation

        with counting_bar(_console(stderr=True), "evaluating") as progress:
            result = run_evaluation(
                _resolve_model(checkpoint),
                data_dir=data_dir,
                dataset=dataset,
                split=split,
                batch_size=batch_size,
                device=device or "auto",
                precision=precision or "auto",
                tta=tta,
                download=download,
                out=out,
                force=force,
                progress=progress,
            )
        render_evaluation(_console(), result)
        if out is not None:
            from cifarnet.tasks.evaluation import output_paths

            _console().print("wrote " + ", ".join(map(str, output_paths(out))), markup=False)


@app.command(
    epilog="Examples: cifarnet predict photo.jpg · cifarnet predict photos/ 'more/*.png' "
    "--out predictions.csv · cifarnet predict photos/ --model runs/train/model.onnx"
)
def predict(
    sources: Annotated[
        list[str],
        typer.Argument(
            help="Image files (PNG, JPEG, BMP, GIF, WebP, TIFF), folders (searched "
            "recursively) and glob patterns.",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help=CHECKPOINT_HELP.format(onnx=", or an exported .onnx file"),
            show_default=False,
        ),
    ] = None,
    topk: Annotated[int, typer.Option(help="Classes listed per image.")] = 5,
    out: Annotated[
        Path | None,
        typer.Option(
            help="CSV with one row per input: path, label, superclass, probability, topk, "
            "error (empty on success).",
            show_default=False,
        ),
    ] = None,
    resize: Annotated[
        str,
        typer.Option(
            help="How an image becomes 32x32: stretch (whole image, aspect ratio ignored), "
            "center-crop (shorter side to 32, middle kept) or letterbox (longer side to 32, "
            "black bars).",
        ),
    ] = "stretch",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 256,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    workers: Annotated[
        int, typer.Option(help="Image decoding threads (0: automatic).", show_default="0")
    ] = 0,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Top-k classes for images; a file that cannot be read is reported and exits 1."""
    with handle_errors(debug):
        from cifarnet.cli.progress import counting_bar
        from cifarnet.cli.render import render_predictions
        from cifarnet.tasks.prediction import predict as run_prediction

        with counting_bar(_console(stderr=True), "predicting") as progress:
            result = run_prediction(
                sources,
                _resolve_model(model),
                topk=topk,
                resize=resize,
                batch_size=batch_size,
                device=device or "auto",
                precision=precision or "auto",
                workers=workers,
                out=out,
                force=force,
                progress=progress,
            )
        render_predictions(_console(), result)
        if out is not None:
            _console().print(f"wrote {out}", markup=False)
        if result.failed:
            _console(stderr=True).print(
                f"[bold red]error:[/] {result.failed} of {len(result.items)} "
                f"input{'s' if len(result.items) != 1 else ''} failed"
            )
            raise typer.Exit(1)


@app.command(
    epilog="Examples: cifarnet export --onnx · cifarnet export runs/train/best.pt --onnx "
    "--torchscript --out deploy/"
)
def export(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(help=CHECKPOINT_HELP.format(onnx=""), show_default=False),
    ] = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write ONNX (the default when no format is given).")
    ] = False,
    torchscript: Annotated[
        bool,
        typer.Option("--torchscript", help="Write TorchScript (loadable with torch alone)."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output file (.onnx / .pt) or folder; with both formats the suffix is "
            "replaced. Default: model.onnx / model.torchscript.pt next to the checkpoint.",
            show_default=False,
        ),
    ] = None,
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset version.", show_default="the exporter's")
    ] = None,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export to ONNX / TorchScript, then verify the file against PyTorch (fails on mismatch)."""
    with handle_errors(debug):
        from cifarnet.cli.render import render_export
        from cifarnet.tasks.exporting import export as run_export

        formats = [f for f, on in (("onnx", onnx), ("torchscript", torchscript)) if on]
        result = run_export(
            _resolve_model(checkpoint),
            formats or ["onnx"],
            out=out,
            opset=opset,
            force=force,
            data_dir=data_dir,
        )
        render_export(_console(), result)


@app.command(
    epilog="Examples: cifarnet benchmark --model resnet18 · cifarnet benchmark "
    "runs/train/best.pt --batch-size 1 --seconds 5 --out bench.csv"
)
def benchmark(
    checkpoint: Annotated[
        Path | None,
        typer.Argument(
            help="A checkpoint; default: --model, else the newest runs/*/best.pt, else a "
            "fresh resnet_reference.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="A registered model, freshly initialised.", show_default=False),
    ] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 256,
    seconds: Annotated[float, typer.Option(help="Timed seconds per row (after warm-up).")] = 3.0,
    compile: Annotated[
        bool, typer.Option("--compile", help="Add torch.compile rows (slow to compile on CPU).")
    ] = False,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Include training rows.")
    ] = True,
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="Include the ONNX Runtime row.")
    ] = True,
    out: Annotated[Path | None, typer.Option(help="CSV of the rows.", show_default=False)] = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Training and inference images/s per runtime and precision (synthetic input)."""
    with handle_errors(debug):
        from cifarnet.cli.render import render_benchmark
        from cifarnet.errors import CheckpointError
        from cifarnet.tasks.benchmarking import benchmark as run_benchmark

        if checkpoint is None and model is None:
            with contextlib.suppress(CheckpointError):  # no run: a fresh resnet_reference
                checkpoint = _resolve_model(None)
        elif checkpoint is not None:
            checkpoint = _resolve_model(checkpoint)  # a run folder: its best.pt
        result = run_benchmark(
            checkpoint,
            model=model,
            device=device or "auto",
            batch_size=batch_size,
            seconds=seconds,
            compile=compile,
            train=train,
            onnx=onnx,
            out=out,
            force=force,
        )
        render_benchmark(_console(), result)
        if out is not None:
            _console().print(f"wrote {out}", markup=False)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cifarnet")


if __name__ == "__main__":
    sys.exit(main())
