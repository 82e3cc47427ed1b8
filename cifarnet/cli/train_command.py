"""The `train` command, its options generated from TrainConfig's field declarations.

Every setting with a flag becomes one option, defaulting to None: a flag the user did not give
overrides nothing, so the recipe's and the --config file's values stand (see resolve_config).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cifarnet.cli.app import app, console, handle_errors
from cifarnet.cli.options import (
    DataDirOpt,
    DebugOpt,
    DeviceOpt,
    PrecisionOpt,
    QuietOpt,
    setting_option,
)
from cifarnet.config.settings import setting_specs

# the same options as the other commands' (Path for --data-dir: the config stores its str)
_SHARED = {"data_dir": DataDirOpt, "device": DeviceOpt, "precision": PrecisionOpt}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def with_setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command`, which takes the settings as `**settings`, one option per setting that has
    a flag: Typer reads a command's options from its signature, here the settings' then its own."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    settings = [
        inspect.Parameter(
            spec.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=_SHARED.get(spec.name)
            or Annotated[_TYPES[spec.kind] | None, setting_option(spec.name)],
        )
        for spec in setting_specs()
        if spec.flag is not None
    ]
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*settings, *(p for p in own if p.kind is not p.VAR_KEYWORD)]
    )
    return command


@app.command(
    epilog="Examples: cifarnet train --epochs 70 · cifarnet train --recipe reference · "
    "cifarnet train --resume runs/train/last.pt --epochs 100"
)
@with_setting_options
def train(
    *,
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
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Train once per seed (e.g. 0,1,2), each a run folder inside runs/<name>/, "
            "then write the group's mean ± std (group.json, group.csv).",
            show_default=False,
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(help="As --seeds, with N seeds from --seed on.", show_default=False),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Train on N processes of this machine (one per GPU; on CPUs, the cores "
            "shared out), started as torchrun --standalone --nproc-per-node N would; "
            "--batch-size stays the global batch.",
            show_default=False,
            min=1,
        ),
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    **settings: Any,
) -> None:
    """Train a model; writes runs/<name>/ (config, metrics.csv, best.pt, last.pt, plot)."""
    given = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in settings.items()
        if value is not None
    }
    # a first Ctrl-C stops training at a safe point, saved; a second one aborts
    callbacks: Any = None  # made inside the block below; once made, they know the run folder

    def abort_note() -> str:
        if seeds is not None or repeat is not None:
            return "each run's last saved checkpoint is intact; finished runs are kept"
        run_dir = callbacks.info.get("run_dir") if callbacks is not None else None
        if resume is not None or (run_dir and (Path(run_dir) / "last.pt").is_file()):
            return "the last saved checkpoint is intact"
        return "no checkpoint had been saved yet"

    if nproc is not None:
        _launch(nproc, given, resume, config, seeds is not None or repeat is not None, quiet, debug)
        return
    if "WORLD_SIZE" in os.environ and not debug:
        # a process of a distributed run (torchrun's variables): torch's C++ side logs each
        # failed connection attempt, traceback and all, where one error line says it
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
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
        if seeds is not None or repeat is not None:
            from cifarnet.cli.experiment_commands import train_over_seeds

            train_over_seeds(train_config, resume, seeds, repeat, quiet)
            return
        from cifarnet.cli.progress import make_train_callbacks
        from cifarnet.training.trainer import train as run_training

        callbacks = make_train_callbacks(console(), quiet)
        try:
            run_training(train_config, resume=resume, overrides=overrides, callbacks=callbacks)
        finally:
            callbacks.close()


def _launch(
    nproc: int,
    given: dict[str, Any],
    resume: Path | None,
    config: Path | None,
    several_seeds: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """`train --nproc N`: the same command, less --nproc, on N processes (training/launch.py);
    they report their own errors, and the command exits with their code."""
    with handle_errors(debug):
        from cifarnet.errors import ConfigError

        if several_seeds:
            raise ConfigError("--nproc trains one run: it cannot be combined with --seeds/--repeat")
        if "WORLD_SIZE" in os.environ:
            raise ConfigError("--nproc starts its own processes: leave it out under torchrun")
        from cifarnet.training.launch import launch

        args = _as_flags(given)
        args += ["--resume", str(resume)] if resume is not None else []
        args += ["--config", str(config)] if config is not None else []
        args += ["--quiet"] * quiet + ["--debug"] * debug
        code = launch(nproc, args, debug)
    if code:
        raise typer.Exit(code)


def _as_flags(given: dict[str, Any]) -> list[str]:
    """The settings the user gave, as the flags that give them."""
    specs = {spec.name: spec for spec in setting_specs()}
    args = []
    for name, value in given.items():
        flags = specs[name].flag.split("/")  # type: ignore[union-attr]
        if isinstance(value, bool):
            args += [flags[0]] if value else flags[1:]  # a one-sided flag is off when absent
        else:
            args += [flags[0], str(value)]
    return args
