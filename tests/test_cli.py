"""The `train` command line: help, version, flag precedence, one-line errors before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, write_cifar100
from typer.testing import CliRunner

import cifarnet
import cifarnet.training.trainer as trainer_mod
from cifarnet.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cifarnet {cifarnet.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "cifarnet", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"cifarnet {cifarnet.__version__}"


def test_train_help_is_fast_and_does_not_import_torch() -> None:
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "from cifarnet.cli import main\n"
        "sys.argv = ['cifarnet', 'train', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', time.perf_counter() - t0)\n"
    )
    best = float("inf")
    for _ in range(2):  # best of two: a busy shared machine can stall one start
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        verdict, seconds = proc.stdout.strip().splitlines()[-1].split()
        assert verdict == "NO-TORCH", proc.stderr
        best = min(best, float(seconds))
    assert "--resume" in proc.stdout and "--recipe" in proc.stdout
    assert best < 0.5


def test_train_help_shows_every_option_and_an_example() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--epochs", "--batch-size", "--lr", "--device", "--precision", "--config"):
        assert option in result.stdout
    assert "reference" in result.stdout and "Examples: cifarnet train" in result.stdout


def test_train_has_an_option_for_every_setting_with_a_flag_and_no_other() -> None:
    import typer.main

    from cifarnet.config.settings import setting_specs

    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = {p.name: [*p.opts, *p.secondary_opts] for p in command.params}
    for spec in setting_specs():
        if spec.flag is None:
            assert spec.name not in options
        else:
            assert options.pop(spec.name) == spec.flag.split("/"), spec.name
    assert sorted(options) == ["config", "debug", "nproc", "quiet", "repeat", "resume", "seeds"]


def test_renamed_flags_and_the_data_folder_reach_the_config(captured: dict) -> None:
    args = ["train", "--ema", "0.5", "--time", "2", "--data-dir", "./data/", "--no-download"]
    assert runner.invoke(app, args).exit_code == 0
    c = captured["config"]
    assert (c.ema_decay, c.time_minutes, c.data_dir, c.download) == (0.5, 2.0, "data", False)


def test_models_lists_the_registry() -> None:
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    line = next(x for x in result.stdout.splitlines() if "resnet_reference" in x)
    assert "3,903,620" in line
    assert "227 M" in line  # multiply-accumulates per 32x32 image (torch's FLOP counter / 2)
    assert "fastnet" in result.stdout and "resnet18" in result.stdout


# precedence: recipe < --config < flags


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Replaces the library's train() and records what the CLI passed it."""
    seen: dict = {}

    def fake_train(config=None, *, resume=None, overrides=None, callbacks=None):
        seen.update(config=config, resume=resume, overrides=overrides)
        return {}

    monkeypatch.setattr(trainer_mod, "train", fake_train)
    return seen


def test_recipe_reference_flag(captured: dict) -> None:
    assert runner.invoke(app, ["train", "--recipe", "reference"]).exit_code == 0
    c = captured["config"]
    assert (c.lr, c.weight_decay, c.batch_size, c.schedule) == (0.01, 1e-5, 256, "plateau")


def test_flags_beat_the_file_and_unset_flags_do_not(captured: dict, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"recipe": "reference", "lr": 0.05, "batch_size": 32, "nesterov": True})
    )
    result = runner.invoke(app, ["train", "--config", str(path), "--epochs", "3"])
    assert result.exit_code == 0, result.output
    c = captured["config"]
    assert (c.epochs, c.lr, c.batch_size, c.nesterov) == (3, 0.05, 32, True)
    assert c.weight_decay == 1e-5  # from the recipe the file names
    runner.invoke(app, ["train", "--config", str(path), "--lr", "0.3", "--no-nesterov"])
    c = captured["config"]
    assert (c.lr, c.nesterov, c.batch_size) == (0.3, False, 32)


def test_resume_takes_file_values_under_flags(captured: dict, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 9, "lr": 0.05}))
    result = runner.invoke(
        app, ["train", "--resume", "runs/x/last.pt", "--config", str(path), "--lr", "0.1"]
    )
    assert result.exit_code == 0, result.output
    assert captured["config"] is None and str(captured["resume"]) == "runs/x/last.pt"
    assert captured["overrides"] == {"epochs": 9, "lr": 0.1}


def test_abort_by_a_second_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    run_dir = tmp_path / "runs" / "train"

    def aborted(config, *, resume, overrides, callbacks):
        callbacks.on_start({**RUN_INFO, "run_dir": str(run_dir)})
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "train", aborted)
    # before the first checkpoint of a new run there is none to speak of
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.stderr.strip() == "aborted (no checkpoint had been saved yet)"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"saved")
    result = runner.invoke(app, ["train"])
    assert result.stderr.strip() == "aborted (the last saved checkpoint is intact)"
    # a resumed run always has one: the last.pt it started from
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "x" / "last.pt")])
    assert result.stderr.strip() == "aborted (the last saved checkpoint is intact)"


# a real (tiny) training run through the CLI


def test_train_end_to_end(cifar100_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    values = {**TINY_MODEL, "batch_size": 32, "subset": 32, "val_size": 20, "epochs": 5}
    path.write_text(json.dumps(values))
    args = ["train", "--config", str(path), "--epochs", "1", "--seed", "3", "--name", "cli"]
    args += ["--data-dir", str(cifar100_dir), "--runs-dir", str(tmp_path / "runs")]
    args += ["--device", "cpu", "--precision", "fp32", "--no-download", "--quiet"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "cli"
    assert "epoch 1/1" in result.stdout and "test top-1" in result.stdout
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1]
    saved = json.loads((run / "config.json").read_text())
    assert (saved["epochs"], saved["seed"], saved["batch_size"]) == (1, 3, 32)
    assert saved["model_kwargs"] == TINY_MODEL["model_kwargs"]


# bad arguments: one line, before any work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--epochs=-2"], "--epochs must be a positive integer, got -2"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["--lr=-0.1"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--model", "resnet81"], "unknown model 'resnet81' (did you mean 'resnet18'?); choose"),
        (["--dataset", "cifar1000"], "unknown dataset 'cifar1000' (did you mean 'cifar100'?)"),
        (["--recipe", "referense"], "unknown recipe 'referense' (did you mean 'reference'?)"),
        (["--device", "cdua"], "unknown device 'cdua' (did you mean 'cuda'?)"),
        (["--precision", "fp8"], "choose one of: auto, fp32, bf16, fp16"),
        (["--schedule", "step"], "unknown schedule 'step'"),
        (["--ema", "1.5"], "--ema must be in [0, 1), got 1.5"),
        (["--cutout", "40"], "--cutout must be at most 32"),
        (["--mixup=-0.2"], "--mixup must be >= 0, got -0.2"),
        (["--cutmix", "inf"], "--cutmix must be >= 0, got inf"),
        (["--name", "../escape"], "--name must be a plain folder name"),
        (["--config", "missing.json"], "config file not found: missing.json"),
        (["--config", "."], "cannot read config file ."),
    ],
)
def test_bad_arguments_fail_fast_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    # no data here: had any work started, the error would be about the dataset instead
    base = ["train", "--data-dir", "nodata", "--no-download", "--runs-dir", "runs"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing downloaded


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_cuda_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--device", "cuda", "--data-dir", "nodata"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --device cuda: no CUDA GPU is available; use --device cpu or auto"
    )
    assert list(tmp_path.iterdir()) == []


def test_corrupt_data_is_one_line_naming_the_file(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:1000])
    args = ["train", "--data-dir", str(tmp_path), "--no-download", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {folder / 'train'} is not a readable CIFAR pickle")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--epochs", "ten"], ["--epoch", "3"], ["--bogus"]])
def test_malformed_flags_are_usage_errors(args: list[str]) -> None:
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "Usage" in result.output


def test_debug_shows_the_traceback() -> None:
    result = runner.invoke(app, ["train", "--epochs", "0", "--debug"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "ConfigError" in result.output


def test_the_stacks_warnings_and_log_records_only_with_debug(capsys) -> None:
    import logging
    import warnings

    from cifarnet.cli.app import handle_errors
    from cifarnet.errors import CifarnetWarning

    # where torch.compile logged its symbolic-shape notes, dozens of times an epoch
    chatter = logging.getLogger("torch.utils._sympy.interp")
    with handle_errors(debug=False):
        warnings.warn(
            "torch.onnx.export(dynamo=False) is deprecated", DeprecationWarning, stacklevel=1
        )
        warnings.warn("test.tar.gz differs from the official files", CifarnetWarning, stacklevel=1)
        assert not chatter.isEnabledFor(logging.WARNING)
        assert chatter.isEnabledFor(logging.ERROR)  # failures still reach the terminal
    err = capsys.readouterr().err
    assert "deprecated" not in err
    assert err.strip() == "warning: test.tar.gz differs from the official files"
    assert chatter.isEnabledFor(logging.WARNING)  # as before, after the command
    with pytest.warns(DeprecationWarning, match="deprecated"), handle_errors(debug=True):
        assert chatter.isEnabledFor(logging.WARNING)
        warnings.warn(
            "torch.onnx.export(dynamo=False) is deprecated", DeprecationWarning, stacklevel=1
        )


RUN_INFO = {
    "run_dir": "runs/train",
    "model": "resnet_reference",
    "parameters": 10,
    "train_images": 100,
    "val_images": 0,
    "time_minutes": None,
    "epochs": 2,
    "start_epoch": 0,
    "device": "cpu",
    "precision": "fp32",
    "channels_last": False,
    "compile": False,
}


def test_train_progress_display_is_released_when_training_fails(monkeypatch, tmp_path) -> None:
    import io

    from rich.console import Console

    import cifarnet.cli.progress
    from cifarnet.errors import DataError

    screen = io.StringIO()
    made = []

    def rich_callbacks(console, quiet):
        made.append(cifarnet.cli.progress.RichCallbacks(Console(file=screen, force_terminal=True)))
        return made[0]

    def failing_training(config, *, resume, overrides, callbacks):
        callbacks.on_start(RUN_INFO)
        callbacks.on_epoch_start(1, 10)
        raise DataError("the disk went away")

    monkeypatch.setattr(cifarnet.cli.progress, "make_train_callbacks", rich_callbacks)
    monkeypatch.setattr(trainer_mod, "train", failing_training)
    result = runner.invoke(app, ["train", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and "the disk went away" in result.stderr
    assert not made[0].progress.live.is_started
    hide, show = "\x1b[?25l", "\x1b[?25h"  # the live display hides the cursor; closing shows it
    assert hide in screen.getvalue() and screen.getvalue().rindex(show) > screen.getvalue().rindex(
        hide
    )


def test_epoch_line_without_validation_shows_dashes_not_nan() -> None:
    import io

    from rich.console import Console

    from cifarnet.cli.progress import PlainCallbacks

    screen = io.StringIO()
    callbacks = PlainCallbacks(Console(file=screen, width=300))
    callbacks.on_start(RUN_INFO)
    nan = float("nan")
    row = {"epoch": 1, "lr": 0.1, "train_loss": 2.0, "train_top1": 30.0, "val_loss": nan}
    callbacks.on_epoch_end(
        {**row, "val_top1": nan, "val_top5": nan, "images_per_second": 99.0, "epoch_seconds": 5}
    )
    line = screen.getvalue()
    assert "val loss - top1 - top5 -" in line and "nan" not in line


def test_peak_memory_is_in_mib_on_linux_and_macos_and_none_without_resource(monkeypatch) -> None:
    import resource

    from cifarnet.runtime.device import peak_memory_mb

    class Usage:
        ru_maxrss = 2 * 2**20  # 2 GiB in KiB (Linux) or 2 MiB in bytes (macOS)

    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    cpu = torch.device("cpu")
    monkeypatch.setattr(sys, "platform", "linux")
    assert peak_memory_mb(cpu) == 2048
    monkeypatch.setattr(sys, "platform", "darwin")
    assert peak_memory_mb(cpu) == 2
    monkeypatch.setitem(sys.modules, "resource", None)  # as on Windows
    assert peak_memory_mb(cpu) is None


def test_counting_bar_on_a_terminal_only_and_gone_after_an_error() -> None:
    import io

    from rich.console import Console

    from cifarnet.cli.progress import counting_bar

    with counting_bar(Console(file=io.StringIO()), "evaluating") as update:
        assert update is None  # a pipe or a log: no bar
    quiet = io.StringIO()
    with counting_bar(Console(file=quiet, force_terminal=True), "evaluating"):
        print("downloading ...", file=quiet)  # before the first update: untouched by the bar
    assert quiet.getvalue() == "downloading ...\n"
    screen = io.StringIO()
    with (
        pytest.raises(RuntimeError),
        counting_bar(Console(file=screen, force_terminal=True), "evaluating") as update,
    ):
        update(5, 10)
        raise RuntimeError("stopped half-way")
    shown = screen.getvalue()
    assert shown.rindex("\x1b[?25h") > shown.rindex("\x1b[?25l")  # the cursor is shown again
    assert shown.endswith("\x1b[2K")  # and the transient bar erased


def test_resume_with_a_config_file_names_the_file_in_its_errors(tmp_path) -> None:
    path = tmp_path / "more.json"
    path.write_text(json.dumps({"epochs": "three"}))
    result = runner.invoke(app, ["train", "--resume", "runs/x/last.pt", "--config", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {path}: --epochs must be a positive integer")


def test_model_kwargs_the_network_refuses_are_named_as_the_config_files(tmp_path) -> None:
    path = tmp_path / "widths.json"
    path.write_text(json.dumps({"model": "resnet", "model_kwargs": {"widths": [8, 8, 16]}}))
    args = ["train", "--config", str(path), "--data-dir", str(tmp_path / "none")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {path}: model 'resnet' does not accept")
    assert "widths must be 4 positive integers" in result.stderr
