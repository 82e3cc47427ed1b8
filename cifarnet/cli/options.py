"""Options several commands share, declared once as `Annotated` aliases.

The training settings among them (--data-dir, --device, --precision) take their flag, help and
default shown from TrainConfig's declarations (`setting_option`), so `train` and the other
commands describe them alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet.config.settings import setting_spec


def setting_option(name: str, **changes: Any) -> Any:
    """The typer.Option of training setting `name`, as its TrainConfig field declares it;
    `changes` are typer.Option arguments that differ for one command."""
    spec = setting_spec(name)
    if spec.flag is None:
        raise ValueError(f"{name} has no flag: it is set in a --config file")
    return typer.Option(spec.flag, **{"help": spec.help, "show_default": spec.shown, **changes})


DataDirOpt = Annotated[Path | None, setting_option("data_dir")]
DeviceOpt = Annotated[str | None, setting_option("device")]
PrecisionOpt = Annotated[str | None, setting_option("precision")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="One plain line per epoch.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]

CHECKPOINT_HELP = (
    "best.pt or last.pt of any run{onnx}; default: the newest runs/*/best.pt under the "
    "current folder."
)
MODEL_FILE_HELP = CHECKPOINT_HELP.format(onnx=", or an exported .onnx file")
# the checkpoint argument: a run's checkpoint, or (ModelArg) an exported .onnx file too
CheckpointArg = Annotated[
    Path | None, typer.Argument(help=CHECKPOINT_HELP.format(onnx=""), show_default=False)
]
ModelArg = Annotated[Path | None, typer.Argument(help=MODEL_FILE_HELP, show_default=False)]


def out_option(help: str) -> Any:
    """--out PATH (no default shown), described by the command that writes it."""
    return Annotated[Path | None, typer.Option("--out", help=help, show_default=False)]
