"""The commands that run one library task each: `models`, `evaluate`, `predict`, `export` and
`benchmark`. Each calls its library function and renders the result."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from cifarnet.cli.app import app, console, handle_errors
from cifarnet.cli.options import (
    MODEL_FILE_HELP,
    BatchSizeOpt,
    CheckpointArg,
    DataDirOpt,
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    ModelArg,
    PrecisionOpt,
    out_option,
    setting_option,
)
from cifarnet.io.untrusted import printable


@app.command(
    epilog="Example: cifarnet models · then cifarnet train --model resnet18 (see train --help)"
)
def models() -> None:
    """List the registered models with their parameter counts."""
    from rich.table import Table

    from cifarnet.models import list_models, model_description
    from cifarnet.models.complexity import model_size

    table = Table(title="cifarnet models (100 classes, 32x32 input)")
    table.add_column("name", style="bold")
    table.add_column("parameters", justify="right")
    table.add_column("MACs/image", justify="right")
    table.add_column("description")
    for name in list_models():
        params, macs = model_size(name, 100)
        table.add_row(name, f"{params:,}", f"{macs / 1e6:,.0f} M", model_description(name))
    console().print(table)


def _resolve_model(path: Path | None) -> Path:
    """The given path, or the newest run's best.pt, saying so on stderr."""
    from cifarnet.tasks.inference import resolve_model_path

    resolved, defaulted = resolve_model_path(path)
    if defaulted:
        console(stderr=True).print(
            f"using {printable(resolved)} (the newest run's best.pt)", markup=False
        )
    elif path is not None and resolved != path:
        console(stderr=True).print(f"using {printable(resolved)} (the run's best.pt)", markup=False)
    return resolved


@app.command(
    epilog="Examples: cifarnet evaluate · cifarnet evaluate runs/train/best.pt --split val "
    "--out results/val.csv · cifarnet evaluate runs/train/model.onnx --tta"
)
def evaluate(
    checkpoint: ModelArg = None,
    data_dir: DataDirOpt = None,
    dataset: Annotated[
        str | None, setting_option("dataset", show_default="the checkpoint's")
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="test; val (the run's own held-out split: its --val-size and --seed); "
            "train (the images the run trained on)."
        ),
    ] = "test",
    batch_size: BatchSizeOpt = 1000,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the logits of each image and its mirror image.")
    ] = False,
    tta_shift: Annotated[
        int,
        typer.Option(
            "--tta-shift",
            metavar="PX",
            help="Also average in the mirrored pairs of the image shifted PX pixels down-right "
            "and up-left, black at the edge (6 views: the unshifted pair weighs 1/2, each "
            "shifted pair 1/4); implies --tta.",
        ),
    ] = 0,
    out: out_option(
        "Summary CSV (one row); next to it STEM_per_class.csv, STEM_confusion.csv "
        "and STEM_confusion.png."
    ) = None,
    force: ForceOpt = False,
    download: Annotated[bool, setting_option("download", show_default=True)] = True,
    debug: DebugOpt = False,
) -> None:
    """Loss, top-1/top-5, superclass accuracy, calibration, per-class results, confusions."""
    with handle_errors(debug):
        from cifarnet.cli.progress import counting_bar
        from cifarnet.cli.render import render_evaluation
        from cifarnet.tasks.evaluation import evaluate as run_evaluation

        with counting_bar(console(stderr=True), "evaluating") as progress:
            result = run_evaluation(
                _resolve_model(checkpoint),
                data_dir=data_dir,
                dataset=dataset,
                split=split,
                batch_size=batch_size,
                device=device or "auto",
                precision=precision or "auto",
                tta=tta,
                tta_shift=tta_shift,
                download=download,
                out=out,
                force=force,
                progress=progress,
            )
        render_evaluation(console(), result)
        if out is not None:
            from cifarnet.tasks.evaluation import output_paths

            console().print("wrote " + ", ".join(map(printable, output_paths(out))), markup=False)


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
            help=MODEL_FILE_HELP,
            show_default=False,
        ),
    ] = None,
    topk: Annotated[int, typer.Option(help="Classes listed per image.")] = 5,
    out: out_option(
        "CSV with one row per input: path, label, superclass, probability, topk, "
        "error (empty on success)."
    ) = None,
    resize: Annotated[
        str,
        typer.Option(
            help="How an image becomes 32x32: stretch (whole image, aspect ratio ignored), "
            "center-crop (shorter side to 32, middle kept) or letterbox (longer side to 32, "
            "black bars).",
        ),
    ] = "stretch",
    batch_size: BatchSizeOpt = 256,
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

        with counting_bar(console(stderr=True), "predicting") as progress:
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
        render_predictions(console(), result)
        if out is not None:
            console().print(f"wrote {printable(out)}", markup=False)
        if result.failed:
            console(stderr=True).print(
                f"[bold red]error:[/] {result.failed} of {len(result.items)} "
                f"input{'s' if len(result.items) != 1 else ''} failed"
            )
            raise typer.Exit(1)


def _written_note(targets: list[Path], since: float) -> Callable[[], str]:
    """For Ctrl-C in the middle of an export of several files: which of `targets` this command
    wrote (each is verified before it is renamed into place) and which it did not."""

    def note() -> str:
        def written(path: Path) -> bool:
            with contextlib.suppress(OSError):
                return path.stat().st_mtime >= since - 1
            return False

        done = [printable(p) for p in targets if written(p)]
        missing = [printable(p) for p in targets if not written(p)]
        parts = [f"written: {', '.join(done)}"] if done else []
        parts += [f"not written: {', '.join(missing)}"] if missing else []
        return "; ".join(parts)

    return note


@app.command(
    epilog="Examples: cifarnet export --onnx · cifarnet export runs/train/best.pt --onnx "
    "--torchscript --out deploy/"
)
def export(
    checkpoint: CheckpointArg = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write ONNX (the default when no format is given).")
    ] = False,
    torchscript: Annotated[
        bool,
        typer.Option("--torchscript", help="Write TorchScript (loadable with torch alone)."),
    ] = False,
    out: out_option(
        "Output file (.onnx / .pt) or folder; with both formats the suffix is "
        "replaced. Default: model.onnx / model.torchscript.pt next to the checkpoint."
    ) = None,
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset version.", show_default="the exporter's")
    ] = None,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export to ONNX / TorchScript, then verify the file against PyTorch (fails on mismatch)."""
    targets: list[Path] = []  # known once the checkpoint is resolved
    with handle_errors(debug, abort_note=_written_note(targets, time.time())):
        from cifarnet.cli.render import render_export
        from cifarnet.tasks.exporting import export as run_export
        from cifarnet.tasks.exporting import output_paths

        formats = [f for f, on in (("onnx", onnx), ("torchscript", torchscript)) if on]
        resolved = _resolve_model(checkpoint)
        with contextlib.suppress(Exception):  # a bad --out is the export's own error to tell
            targets.extend(output_paths(resolved, formats or ["onnx"], out).values())
        result = run_export(
            resolved,
            formats or ["onnx"],
            out=out,
            opset=opset,
            force=force,
            data_dir=data_dir,
        )
        render_export(console(), result)


def _row_status(line: str) -> None:
    """A benchmark row starting, on stderr: a slow warm-up is not taken for a hang."""
    from cifarnet.cli.render import shown

    console(stderr=True).print(f"[dim]{shown(line)} ...[/]")


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
    batch_size: Annotated[
        int | None,
        typer.Option(help="Images per batch.", show_default="256; 1024 on a GPU"),
    ] = None,
    seconds: Annotated[
        float,
        typer.Option(
            help="Minimum timed seconds per row, after its warm-up; a warm-up can take "
            "minutes on a slow CPU (compiling longer). Each row is announced as it starts."
        ),
    ] = 3.0,
    compile: Annotated[
        bool, typer.Option("--compile", help="Add torch.compile rows (slow to compile on CPU).")
    ] = False,
    train: Annotated[
        bool, typer.Option("--train/--no-train", help="Include training rows.")
    ] = True,
    onnx: Annotated[
        bool, typer.Option("--onnx/--no-onnx", help="Include the ONNX Runtime row.")
    ] = True,
    out: out_option("CSV of the rows.") = None,
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
            status=_row_status,
        )
        render_benchmark(console(), result)
        if out is not None:
            console().print(f"wrote {printable(out)}", markup=False)
