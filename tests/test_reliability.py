"""Faults injected into training (signals, kill -9, divergence, OOM, failed writes, an
interrupted download) and exact resume. Tiny data, CPU only; subprocesses where a real signal
or exit code is the point."""

from __future__ import annotations

import errno
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL
from tiny_run import wait_for_rows
from typer.testing import CliRunner

import cifarnet.training.trainer as trainer_mod
from cifarnet.cli import app
from cifarnet.config.settings import TrainConfig, resolve_config
from cifarnet.data.datasets import load_dataset
from cifarnet.errors import (
    CheckpointError,
    DataError,
    DeviceError,
    DivergenceError,
    OutputError,
    TrainingInterrupted,
)
from cifarnet.io.checkpoint import load_checkpoint
from cifarnet.io.metrics_log import COLUMNS
from cifarnet.io.run_folder import new_run_folder
from cifarnet.training.trainer import TrainCallbacks, train

TIMING = ["epoch_seconds", "images_per_second", "elapsed_seconds"]


def _fast(tiny_config: TrainConfig, **changes: object) -> TrainConfig:
    """64 training images in batches of 32: 2 steps per epoch."""
    return tiny_config.replace(
        **{"subset": 64, "batch_size": 32, "val_size": 20, "eval_batch_size": 256, **changes}
    )


def _epochs(run: Path) -> list[int]:
    return pd.read_csv(run / "metrics.csv")["epoch"].tolist()


class SignalAt(TrainCallbacks):
    """Sends itself `sig` after training step `step` of epoch `epoch` (a real signal, handled
    by the trainer's own handler)."""

    def __init__(self, epoch: int, step: int, sig: int = signal.SIGINT) -> None:
        self.at, self.sig, self.epoch = (epoch, step), sig, 0

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epoch = epoch

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        if (self.epoch, step) == self.at:
            signal.raise_signal(self.sig)


class KeepLast(TrainCallbacks):
    """Copies last.pt's bytes as each epoch ends."""

    def __init__(self) -> None:
        self.saved: dict[int, bytes] = {}

    def on_start(self, info: dict) -> None:
        self.run = Path(info["run_dir"])

    def on_epoch_end(self, row: dict) -> None:
        self.saved[row["epoch"]] = (self.run / "last.pt").read_bytes()


# exact resume (point 3)


@pytest.fixture(scope="module")
def exact_setup(tmp_path_factory: pytest.TempPathFactory, cifar100_dir: Path):
    """A 3-epoch run with everything that carries state across a resume: warm-up + cosine lr
    by global step, momentum, EMA weights, lookahead's slow weights (synced at step 5, after
    either cut), dropout (the global RNG, drawn twice a step by SAM's
    two passes), shuffling + crop and flip (the per-epoch generator), TrivialAugment + random
    erasing and MixUp / CutMix (drawn per step). 96 images in batches of 32: 3 steps per
    epoch."""
    runs = tmp_path_factory.mktemp("exact")
    config = resolve_config(
        {
            "model": "resnet",
            "model_kwargs": {**TINY_MODEL["model_kwargs"], "stem_dropout": 0.2},
            "data_dir": str(cifar100_dir),
            "epochs": 3,
            "batch_size": 32,
            "subset": 96,
            "val_size": 20,
            "eval_batch_size": 256,
            "ema_decay": 0.9,
            "lookahead": True,
            "mixup": 0.2,
            "cutmix": 1.0,
            "augment": "trivialaugment",
            "random_erasing": 0.5,
            "sam": 0.05,
            "runs_dir": str(runs),
            "device": "cpu",
            "precision": "fp32",
            "download": False,
            "name": "whole",
        }
    )
    return config, Path(train(config)["run_dir"])


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("last.pt", "best.pt"):
        sa, sb = load_checkpoint(a / name)["state_dict"], load_checkpoint(b / name)["state_dict"]
        assert sa.keys() == sb.keys()
        for key in sa:
            delta = (sa[key].double() - sb[key].double()).abs().max().item()
            assert delta <= 1e-6, f"{name} {key}: max |delta| {delta}"
    oa, ob = (
        load_checkpoint(a / "last.pt")["optimizer"],
        load_checkpoint(b / "last.pt")["optimizer"],
    )
    for key, state in oa["state"].items():
        assert torch.allclose(
            state["momentum_buffer"], ob["state"][key]["momentum_buffer"], atol=1e-6
        )
    ma = pd.read_csv(a / "metrics.csv").drop(columns=TIMING)
    mb = pd.read_csv(b / "metrics.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(ma, mb, check_exact=False, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("epoch", "step", "saved_step"),
    [(2, 1, 1), (1, 3, 0)],
    ids=["mid-epoch", "epoch-boundary"],
)
def test_interrupt_then_resume_matches_the_uninterrupted_run(
    exact_setup, epoch: int, step: int, saved_step: int
) -> None:
    config, whole = exact_setup
    name = f"cut-{epoch}-{step}"
    with pytest.raises(TrainingInterrupted) as err:
        train(config.replace(name=name), callbacks=SignalAt(epoch, step))
    run = whole.parent / name
    assert err.value.exit_code == 130
    assert f"Resume with: cifarnet train --resume {run / 'last.pt'}" in str(err.value)
    progress = load_checkpoint(run / "last.pt")["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (
        epoch - 1 if saved_step else epoch,
        saved_step,
    )
    assert _epochs(run) == list(range(1, progress["epoch"] + 1))
    summary = train(resume=run / "last.pt")
    assert summary["epochs"] == 3
    _assert_same_run(whole, run)


# signals and kill -9 in a real process (point 2)


def _spawn(folder: Path, cifar100_dir: Path, stderr: int = subprocess.PIPE) -> subprocess.Popen:
    """`python -m cifarnet train` on tiny data for 1000 epochs (2 steps each), in `folder`."""
    folder.mkdir()
    values = {
        **TINY_MODEL,
        "data_dir": str(cifar100_dir),
        "epochs": 1000,
        "batch_size": 32,
        "subset": 64,
        "val_size": 20,
        "eval_batch_size": 256,
        "device": "cpu",
        "precision": "fp32",
        "download": False,
    }
    (folder / "cfg.json").write_text(json.dumps(values))
    return subprocess.Popen(
        [sys.executable, "-m", "cifarnet", "train", "--config", "cfg.json", "--quiet"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_prints_resume_command_and_exits(
    tmp_path: Path, cifar100_dir: Path, monkeypatch: pytest.MonkeyPatch, sig: int, code: int
) -> None:
    folder = tmp_path / "work"
    proc = _spawn(folder, cifar100_dir)
    wait_for_rows(proc, folder / "runs" / "train" / "metrics.csv", 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    # the tiny dataset's image counts are not the official ones: one warning line, then the error
    assert len(lines) == 2 and lines[0].startswith("warning: ") and "not the official" in lines[0]
    assert lines[1].startswith("error: stopped by SIG")
    found = re.search(r"Resume with: (cifarnet train --resume (\S+))", err)
    assert found, err
    assert found.group(2) == "runs/train/last.pt"
    last = load_checkpoint(folder / found.group(2))
    assert last["kind"] == "last"
    done = last["progress"]["epoch"]
    if sig == signal.SIGINT:  # the printed command works (more epochs: the run was at 1000)
        monkeypatch.chdir(folder)
        args = [*shlex.split(found.group(1))[1:], "--epochs", str(done + 1), "--quiet"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert _epochs(folder / "runs" / "train") == list(range(1, done + 2))


def test_a_closed_output_stops_training_after_saving(tmp_path: Path, cifar100_dir: Path) -> None:
    # `cifarnet train | head -1`: the reader goes away after one line
    folder = tmp_path / "work"
    proc = _spawn(folder, cifar100_dir)
    assert proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: stopped by SIGPIPE (its output was closed) at epoch ")
    assert "Resume with: cifarnet train --resume runs/train/last.pt" in lines[-1]
    assert load_checkpoint(folder / "runs" / "train" / "last.pt")["kind"] == "last"
    # `2>&1 | head -1`: the warnings and the error line have no reader either; the run still
    # stops at a safe point, saves and exits 141
    folder = tmp_path / "both"
    proc = _spawn(folder, cifar100_dir, stderr=subprocess.STDOUT)
    assert proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert load_checkpoint(folder / "runs" / "train" / "last.pt")["kind"] == "last"


class _ReaderGoneAfterEpoch(TrainCallbacks):
    """Progress output whose reader goes away at the end of epoch `epoch`."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.rows = epoch, []

    def on_epoch_end(self, row: dict) -> None:
        self.rows.append(row["epoch"])
        if row["epoch"] >= self.epoch:
            raise BrokenPipeError(errno.EPIPE, "closed")


def test_a_closed_output_is_a_stop_unless_the_run_is_over(tiny_config) -> None:
    early = _ReaderGoneAfterEpoch(1)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(tiny_config.replace(epochs=3), callbacks=early)
    assert stopped.value.exit_code == 141 and early.rows == [1]  # silent after the error
    assert load_checkpoint(stopped.value.checkpoint)["progress"]["epoch"] == 1
    # after the last epoch nothing is lost: the run ends as usual, test evaluation included
    summary = train(tiny_config.replace(epochs=2), callbacks=_ReaderGoneAfterEpoch(2))
    assert summary["epochs"] == 2 and summary["test_top1"] >= 0
    assert (Path(summary["run_dir"]) / "summary.json").is_file()


def test_kill_9_then_resume_gives_one_row_per_epoch(
    tmp_path: Path, cifar100_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "work"
    proc = _spawn(folder, cifar100_dir)
    run = folder / "runs" / "train"
    wait_for_rows(proc, run / "metrics.csv", 2)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(run / "last.pt")["progress"]["epoch"]
    assert done >= 2
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(
        app, ["train", "--resume", "runs/train/last.pt", "--epochs", str(done + 1), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert _epochs(run) == list(range(1, done + 2))
    assert list(pd.read_csv(run / "metrics.csv").columns) == COLUMNS


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_second_signal_aborts_at_once_and_keeps_last_pt(
    tiny_config: TrainConfig, sig: int, code: int
) -> None:
    class Twice(KeepLast):
        def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
            if self.saved and step == 1:  # epoch 2, step 1: the user presses Ctrl-C twice
                signal.raise_signal(sig)
                signal.raise_signal(sig)

    keep = Twice()
    # what the process had before (default_int_handler, or SIG_IGN in a background job)
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt) as aborted:
        train(_fast(tiny_config, epochs=3), callbacks=keep)
    assert aborted.value.exit_code == code  # what the CLI exits with
    assert (keep.run / "last.pt").read_bytes() == keep.saved[1]
    assert signal.getsignal(sig) is before  # handler restored


def test_signal_after_the_last_epoch_points_to_evaluate(tiny_config: TrainConfig) -> None:
    with pytest.raises(TrainingInterrupted) as err:
        train(_fast(tiny_config, epochs=2), callbacks=SignalAt(2, 2, signal.SIGTERM))
    text = str(err.value)
    assert err.value.exit_code == 143
    assert "after the last epoch (2)" in text and "Resume with" not in text
    assert re.search(r"cifarnet evaluate \S+/best\.pt$", text)


def test_resume_command_survives_spaces_in_the_path(
    tiny_config: TrainConfig, tmp_path: Path
) -> None:
    config = _fast(tiny_config, runs_dir=str(tmp_path / "my runs"))
    with pytest.raises(TrainingInterrupted) as err:
        train(config, callbacks=SignalAt(1, 1))
    command = str(err.value).split("Resume with: ")[1]
    assert shlex.split(command) == [
        "cifarnet",
        "train",
        "--resume",
        str(tmp_path / "my runs" / "train" / "last.pt"),
    ]


def test_kill_9_between_csv_and_checkpoint_is_repaired(tiny_config: TrainConfig) -> None:
    """A duplicated and a half-written row (as a crash during an append can leave) are replaced
    by last.pt's history on resume."""
    config = _fast(tiny_config, epochs=2)
    run = Path(train(config)["run_dir"])
    last_row = (run / "metrics.csv").read_text().splitlines()[-1]
    with open(run / "metrics.csv", "a") as f:
        f.write(last_row + "\n2,0.1,4.6")
    train(resume=run / "last.pt", overrides={"epochs": 3})
    assert _epochs(run) == [1, 2, 3]


# divergence (point 4)


def test_nan_loss_stops_with_epoch_step_and_advice(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = trainer_mod.train_step

    def poisoned(model, images, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # epoch 2, step 2
            images = torch.full_like(images, float("nan"))
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "train_step", poisoned)
    keep = KeepLast()
    with pytest.raises(DivergenceError) as err:
        train(_fast(tiny_config, epochs=3), callbacks=keep)
    text = str(err.value)
    assert "epoch 2, step 2" in text and "--lr" in text and "fp32" in text
    assert "last.pt keeps the weights of epoch 1" in text and "\n" not in text
    run = keep.run
    assert (run / "last.pt").read_bytes() == keep.saved[1]
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run / name)
        assert ckpt["progress"]["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert _epochs(run) == [1]
    assert (run / "results.png").stat().st_size > 0  # the curves of the epoch that finished


def test_nonfinite_weights_after_a_finite_loss_are_not_saved(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update can overflow the weights at an epoch's last step while that step's loss was
    still finite: the checkpoints must not take those weights."""
    calls = []
    real = trainer_mod.train_step

    def overflow(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # the last step of epoch 2
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))
        return result

    monkeypatch.setattr(trainer_mod, "train_step", overflow)
    keep = KeepLast()
    with pytest.raises(DivergenceError, match="NaN/Inf at the end of epoch 2") as err:
        train(_fast(tiny_config, epochs=3), callbacks=keep)
    assert "--lr" in str(err.value)
    assert (keep.run / "last.pt").read_bytes() == keep.saved[1]
    best = load_checkpoint(keep.run / "best.pt")["state_dict"]
    assert all(torch.isfinite(v).all() for v in best.values())


def test_a_failed_test_pass_still_leaves_the_curves(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(path, *args, **kwargs):
        raise CheckpointError(f"cannot read {path}")

    monkeypatch.setattr(trainer_mod, "load_checkpoint", unreadable)  # _finish reloads best.pt
    keep = KeepLast()
    with pytest.raises(CheckpointError):
        train(_fast(tiny_config, epochs=1), callbacks=keep)
    assert (keep.run / "results.png").stat().st_size > 0


def test_huge_lr_diverges_cleanly(tiny_config: TrainConfig) -> None:
    with pytest.raises(DivergenceError, match=r"training diverged: .*epoch \d+.*--lr"):
        train(_fast(tiny_config, epochs=6, lr=1e12, warmup_epochs=0.0))


# resources (point 9)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 4503599627370496 bytes. Error code 12"
        ),
        RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)"),
    ],
    ids=["cuda", "cpu", "mps"],
)
def test_out_of_memory_suggests_a_smaller_batch(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def oom(*args, **kwargs):
        raise error

    monkeypatch.setattr(trainer_mod, "train_step", oom)
    with pytest.raises(DeviceError, match=r"out of memory .*batch size 32.*smaller --batch-size"):
        train(_fast(tiny_config))


def test_out_of_memory_in_evaluation(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer_mod, "evaluate", oom)
    with pytest.raises(DeviceError, match=r"out of memory .*evaluat.*eval_batch_size"):
        train(_fast(tiny_config, epochs=1))


def test_other_runtime_errors_are_not_called_oom(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(trainer_mod, "train_step", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train(_fast(tiny_config))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_absent_cuda_is_a_clear_error_before_data(tmp_path: Path, device: str) -> None:
    config = TrainConfig(device=device, data_dir=str(tmp_path / "none"), download=False)
    with pytest.raises(DeviceError, match=rf"--device {device}: no CUDA GPU.*--device cpu"):
        train(config)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_absent_mps_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="MPS is not available"):
        train(TrainConfig(device="mps", data_dir=str(tmp_path), download=False))


# outputs (point 7: train and checkpoint writes)


def test_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    first = new_run_folder(tmp_path, "exp")
    (first / "best.pt").write_bytes(b"keep me")
    second, third = new_run_folder(tmp_path, "exp"), new_run_folder(tmp_path, "exp")
    assert (first.name, second.name, third.name) == ("exp", "exp-2", "exp-3")
    assert (first / "best.pt").read_bytes() == b"keep me"


def test_unwritable_runs_dir_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"cannot create a run folder in .*file"):
        new_run_folder(tmp_path / "file" / "runs", "train")


def test_result_files_that_could_not_be_written_are_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cifarnet.io.tables import check_new_files

    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"file is a file, not a folder"):
        check_new_files([tmp_path / "file" / "sub" / "eval.csv"], force=False)
    check_new_files([tmp_path / "new" / "sub" / "eval.csv"], force=False)  # made at write time
    # a read-only folder (checked through os.access: permission bits do not bind root)
    monkeypatch.setattr("os.access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(OutputError, match=r"the folder .* is not writable"):
        check_new_files([tmp_path / "eval.csv"], force=False)


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cifarnet.io.checkpoint as checkpoint_mod

    real_write = checkpoint_mod.atomic_write
    lasts = []

    def full_at_epoch_2(path, write, check=None):
        if Path(path).name == "last.pt":
            lasts.append(path)
            if len(lasts) == 2:  # the disk fills half-way through epoch 2's last.pt

                def half(f) -> None:
                    f.write(b"PK\x03\x04 half a checkpoint")
                    raise OSError(errno.ENOSPC, "No space left on device")

                return real_write(path, half, check)
        return real_write(path, write, check)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", full_at_epoch_2)
    keep = KeepLast()
    with pytest.raises(OutputError) as err:
        train(_fast(tiny_config, epochs=3), callbacks=keep)
    last = keep.run / "last.pt"
    assert f"could not write {last}: No space left on device" in str(err.value)
    assert "unchanged" in str(err.value)
    assert last.read_bytes() == keep.saved[1]
    assert not [p for p in keep.run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(checkpoint_mod, "atomic_write", real_write)
    train(resume=last, overrides={"epochs": 2})
    assert _epochs(keep.run) == [1, 2]


def test_failed_metrics_append_is_reported_and_repaired_on_resume(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    import cifarnet.io.metrics_log as metrics_log

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(metrics_log, "open", full_disk_open, raising=False)
    keep = KeepLast()
    with pytest.raises(OutputError) as err:
        train(_fast(tiny_config, epochs=2), callbacks=keep)
    text = str(err.value)
    assert f"could not append epoch 1 to {keep.run / 'metrics.csv'}" in text
    assert "No space left on device" in text and "resuming" in text
    monkeypatch.undo()
    train(resume=keep.run / "last.pt")
    assert _epochs(keep.run) == [1, 2]


def test_crash_while_saving_best_keeps_best_and_last_consistent(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the two checkpoint writes of an epoch: last.pt must never claim a best
    epoch whose weights best.pt does not hold (nothing later would repair it)."""
    real_save = torch.save

    def crash_at_epoch_2(obj, f, *args, **kwargs):
        if obj.get("kind") == "best" and obj["progress"]["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies here
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crash_at_epoch_2)
    keep = KeepLast()
    with pytest.raises(KeyboardInterrupt):
        train(_fast(tiny_config, epochs=3, val_size=0), callbacks=keep)
    best = load_checkpoint(keep.run / "best.pt")["progress"]
    last = load_checkpoint(keep.run / "last.pt")["progress"]
    assert best["epoch"] == last["best_epoch"]
    monkeypatch.setattr(torch, "save", real_save)
    summary = train(resume=keep.run / "last.pt")
    assert summary["best_epoch"] == load_checkpoint(keep.run / "best.pt")["progress"]["epoch"]
    assert _epochs(keep.run) == [1, 2, 3]


# data: an interrupted download (point 5)


def test_interrupted_download_is_never_taken_for_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.utils as tv_utils

    def broken(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
        Path(root, filename or "x").write_bytes(b"\x1f\x8b partial archive")
        raise ConnectionResetError("Connection reset by peer")

    monkeypatch.setattr(tv_utils, "download_url", broken)
    with pytest.raises(DataError, match="download failed: Connection reset by peer") as err:
        load_dataset("cifar100", tmp_path, download=True)
    assert str(tmp_path) in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no archive under its final name, no leftovers
    # folders the failed download created are not left behind either
    with pytest.raises(DataError, match="download failed"):
        load_dataset("cifar100", tmp_path / "new" / "data", download=True)
    assert list(tmp_path.iterdir()) == []


def test_short_download_fails_its_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tv_utils

    def short(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
        Path(root, filename or "x").write_bytes(b"\x1f\x8b the server closed early")

    monkeypatch.setattr(tv_utils, "download_url", short)
    with pytest.raises(DataError, match="md5"):
        load_dataset("cifar100", tmp_path, download=True)
    assert not (tmp_path / "cifar-100-python.tar.gz").exists()


def test_leftover_of_a_killed_download_is_ignored(tmp_path: Path) -> None:
    part = tmp_path / ".download-abc123" / "cifar-100-python.tar.gz"
    part.parent.mkdir()
    part.write_bytes(b"\x1f\x8b partial")
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar100", tmp_path, download=False)
