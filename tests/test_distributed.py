"""Data-parallel training on 2 CPU processes (gloo), as torchrun and `train --nproc` start it:
the same numbers as one process, rank 0 alone writing, stops that agree, a lost process and
bad starts each ending in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_MODEL
from tiny_run import RUN_FILES, one_line_failure, wait_for_rows
from typer.testing import CliRunner

from cifarnet.cli import app

# 300 training images (400 less 100 for validation) in 5 global batches of 60: 30 per process
SETTINGS = {
    **TINY_MODEL,
    "epochs": 2,
    "batch_size": 60,
    "eval_batch_size": 128,
    "val_size": 100,
    "device": "cpu",
    "precision": "fp32",
    "download": False,
}
# a run that goes on until stopped: 64 images in 2 global batches of 32 per epoch
ENDLESS = {**SETTINGS, "epochs": 1000, "batch_size": 32, "subset": 64, "val_size": 20}
# per-epoch losses and final weights of 2 processes against 1: float32 sums taken in another
# order (the gradient average, the BatchNorm statistics, oneDNN's channels_last kernels, which
# differ with the batch size) differ in the last bits, and 10 SGD steps with momentum carry that
# into the weights. At lr 0.01 that is 2e-5 in the loss and 6e-4 in the weights (seen here),
# while BatchNorm over each process's half batch instead of the global batch moves the loss
# 7e-4 and the weights 0.09; at the default lr 0.1 the rounding alone grows to 2e-3 and 0.09.
SYNC_BN = {**SETTINGS, "lr": 0.01}
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 2e-3


def _folder(tmp_path: Path, cifar100_dir: Path, settings: dict) -> Path:
    """A working folder holding cfg.json: `settings` on the tiny data."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps({**settings, "data_dir": str(cifar100_dir)}))
    return folder


def _start(folder: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m cifarnet train --config cfg.json --quiet *args` in `folder`, in a session of
    its own (a Ctrl-C goes to its process group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cifarnet", "train", "--config", "cfg.json", "--quiet", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def _torchrun_script(folder: Path, script: str) -> list[str]:
    """Run `script` in `folder` as the 2 processes of a run started by torchrun; they must
    succeed. Returns the `result` (a str) each process's script set, by rank: in one file per
    process, for the processes share one stdout, where lines can interleave."""
    (folder / "api.py").write_text(
        script + "open(f\"rank{os.environ['RANK']}.txt\", 'w').write(result)\n"
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = subprocess.run(
        [*torchrun, "--nproc-per-node", "2", "api.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [(folder / f"rank{rank}.txt").read_text() for rank in (0, 1)]


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error:" in line]


def _rows(run: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(run / "metrics.csv").to_dict("records")


def _weights(run: Path) -> dict:
    import torch

    return torch.load(run / "last.pt", weights_only=True)["state_dict"]


def test_two_processes_with_sync_bn_train_as_one_with_the_same_global_batch(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    from cifarnet import evaluate
    from cifarnet.config.settings import resolve_config
    from cifarnet.training.trainer import train

    folder = _folder(tmp_path, cifar100_dir, SYNC_BN)
    # the Python API under torchrun (`train --nproc` tests run the command under it)
    results = _torchrun_script(
        folder,
        "import json, os, cifarnet\n"
        "summary = cifarnet.train(**json.load(open('cfg.json')), sync_bn=True)\n"
        "result = summary['run_dir']\n",
    )
    # every process returns the summary of the one run
    assert results == ["runs/train"] * 2
    one = Path(
        train(
            resolve_config(
                {**SYNC_BN, "data_dir": str(cifar100_dir), "runs_dir": str(tmp_path / "one")}
            )
        )["run_dir"]
    )
    # rank 0 alone wrote: one run folder, with the files of a single-process run
    runs = folder / "runs"
    assert [p.name for p in runs.iterdir()] == ["train"]
    two = runs / "train"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    rows_two, rows_one = _rows(two), _rows(one)
    assert [r["epoch"] for r in rows_two] == [1, 2]
    for a, b in zip(rows_two, rows_one, strict=True):
        assert a["train_images"] == b["train_images"] == 300  # every process's share counted
        for column in ("train_loss", "val_loss", "val_top1"):
            assert abs(a[column] - b[column]) <= LOSS_TOLERANCE, (column, a, b)
    w2, w1 = _weights(two), _weights(one)
    assert w2.keys() == w1.keys()  # the unwrapped model's names, BatchNorm's buffers
    for name in w1:
        assert (w2[name].double() - w1[name].double()).abs().max() <= WEIGHT_TOLERANCE, name
    # its best.pt is any run's: it evaluates as usual, to the test figures of the processes'
    # split test pass
    result = evaluate(two / "best.pt", device="cpu", precision="fp32", data_dir=cifar100_dir)
    summary = json.loads((two / "summary.json").read_text())
    assert result.images == 200
    assert abs(result.top1 - summary["test_top1"]) < 1e-9
    assert abs(result.loss - summary["test_loss"]) < 1e-5


def test_ctrl_c_stops_every_process_once_and_one_process_resumes(
    tmp_path: Path, cifar100_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path, cifar100_dir, ENDLESS)
    proc = _start(folder, "--nproc", "2")
    run = folder / "runs" / "train"
    wait_for_rows(proc, run / "metrics.csv", 1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    (line,) = _error_lines(err)
    assert line.startswith("error: stopped by SIGINT") and "runs/train/last.pt" in line
    assert [p.name for p in (folder / "runs").iterdir()] == ["train"]
    assert sorted(p.name for p in run.iterdir()) == [f for f in RUN_FILES if f != "summary.json"]
    from cifarnet.io.checkpoint import load_checkpoint

    done = load_checkpoint(run / "last.pt")["progress"]["epoch"]
    monkeypatch.chdir(folder)
    args = ["train", "--resume", "runs/train/last.pt", "--epochs", str(done + 1), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in _rows(run)] == list(range(1, done + 2))


def test_a_signal_one_process_gets_just_after_a_sync_point_stops_all_at_the_next(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    folder = _folder(tmp_path, cifar100_dir, SETTINGS)
    # rank 0 alone signals itself, from on_step: after step 2's sync point, before the check
    # for a stop; acting on it there would leave rank 1 alone at step 3's all_reduce
    results = _torchrun_script(
        folder,
        "import json, os, signal, cifarnet\n"
        "from cifarnet.training.callbacks import TrainCallbacks\n"
        "from cifarnet.errors import TrainingInterrupted\n"
        "class Signal(TrainCallbacks):\n"
        "    def on_step(self, step, steps, stats):\n"
        "        if step == 2:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "try:\n"
        "    cifarnet.train(**json.load(open('cfg.json')), callbacks=Signal())\n"
        "except TrainingInterrupted as stop:\n"
        "    result = stop.checkpoint\n",
    )
    last = folder / "runs" / "train" / "last.pt"
    assert results == ["runs/train/last.pt"] * 2
    from cifarnet.io.checkpoint import load_checkpoint

    progress = load_checkpoint(last)["progress"]
    assert (progress["epoch"], progress["step_in_epoch"]) == (0, 3)


def test_patience_ends_every_process_at_the_same_epoch(tmp_path: Path, cifar100_dir: Path) -> None:
    # with SAM too, whose two passes per step each average their gradients
    settings = {**SETTINGS, "epochs": 8, "patience": 2, "sam": 0.05}
    folder = _folder(tmp_path, cifar100_dir, settings)
    # validation top-1 scripted per epoch on every process (as the reduced figure each one gets):
    # best at epoch 1, then 2 epochs without a better one
    results = _torchrun_script(
        folder,
        "import dataclasses, json, os, cifarnet\n"
        "import cifarnet.training.trainer as trainer\n"
        "real, calls = trainer.evaluate, []\n"
        "def scripted(*args, **kwargs):\n"
        "    result = real(*args, **kwargs)\n"
        "    calls.append(1)\n"
        "    return dataclasses.replace(result, top1={1: 50.0}.get(len(calls), 40.0))\n"
        "trainer.evaluate = scripted\n"
        "summary = cifarnet.train(**json.load(open('cfg.json')))\n"
        "result = json.dumps(summary)\n",
    )
    summaries = [json.loads(result) for result in results]
    for summary in summaries:  # their own timings and memory apart
        assert summary["stopped_early"] is True and summary["epochs"] == 3, summary
    assert [r["epoch"] for r in _rows(folder / "runs" / "train")] == [1, 2, 3]


def test_a_closed_output_stops_every_process_after_rank_0_saved(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    # `train --nproc 2 | head -1`: rank 0 alone finds its output closed; the others stop with it
    # and wait for its save, for torchrun stops every process once one has exited
    folder = _folder(tmp_path, cifar100_dir, ENDLESS)
    proc = _start(folder, "--nproc", "2")
    assert proc.stdout is not None
    while not proc.stdout.readline().startswith("epoch 1"):
        pass
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 13, err
    (line,) = _error_lines(err)
    assert line.startswith("error: stopped by SIGPIPE") and "runs/train/last.pt" in line
    from cifarnet.io.checkpoint import load_checkpoint

    assert load_checkpoint(folder / "runs" / "train" / "last.pt")["progress"]["epoch"] >= 1


def _workers(launcher: int) -> dict[int, int]:
    """{rank: pid} of the processes `train --nproc` (pid `launcher`) started."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    ranks = {}
    for pid in map(int, children):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [v for v in environ if v.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0][5:])] = pid
    return ranks


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_a_killed_process_ends_the_run_with_one_line(tmp_path: Path, cifar100_dir: Path) -> None:
    folder = _folder(tmp_path, cifar100_dir, ENDLESS)
    proc = _start(folder, "--nproc", "2", "--dist-timeout", "30")
    wait_for_rows(proc, folder / "runs" / "train" / "metrics.csv", 1)
    os.kill(_workers(proc.pid)[1], signal.SIGKILL)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1, err
    (line,) = _error_lines(err)
    assert line.startswith("error: lost contact with the other processes of the run"), line


def test_a_global_batch_the_processes_do_not_divide_is_one_line(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    folder = _folder(tmp_path, cifar100_dir, SETTINGS)
    proc = _start(folder, "--nproc", "2", "--batch-size", "61")
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert _error_lines(err) == [
        "error: --batch-size 61 is the global batch and must be a multiple of the 2 processes "
        "(e.g. 60 or 62)"
    ]
    assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """torchrun's variables for process `rank` of `world` on this machine."""
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def test_processes_started_with_different_settings_refuse_to_train(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    folder = _folder(tmp_path, cifar100_dir, SETTINGS)
    port = _free_port()
    procs = [_start(folder, "--seed", str(rank), env=_rank_env(rank, 2, port)) for rank in (0, 1)]
    errors = [p.communicate(timeout=90)[1] for p in procs]
    assert [p.returncode for p in procs] == [1, 1], errors
    assert _error_lines(errors[1]) == []  # rank 0 reports what every process met
    (line,) = _error_lines(errors[0])
    assert "different settings: rank 1 has --seed 1, rank 0 has 0" in line
    assert not (folder / "runs").exists() or not any((folder / "runs").iterdir())


def test_a_rendezvous_that_never_completes_ends_in_bounded_time(
    tmp_path: Path, cifar100_dir: Path
) -> None:
    folder = _folder(tmp_path, cifar100_dir, SETTINGS)
    t0 = time.monotonic()
    proc = _start(folder, "--dist-timeout", "2", env=_rank_env(0, 2, _free_port()))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    (line,) = _error_lines(err)
    assert line.startswith("error: could not join the 2 processes of the run"), line
    assert "--dist-timeout 2 s" in line
    assert time.monotonic() - t0 < 30


def test_sync_bn_outside_a_distributed_run_is_one_line(tiny_config) -> None:
    result = CliRunner().invoke(
        app, ["train", "--config", _saved(tiny_config), "--sync-bn", "--quiet"]
    )
    assert "--sync-bn needs a distributed run" in one_line_failure(result)


def test_nccl_on_cpus_is_one_line(tiny_config, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _rank_env(0, 1, _free_port()).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TORCH_CPP_LOG_LEVEL", "WARNING")  # restored after: train sets it
    result = CliRunner().invoke(
        app, ["train", "--config", _saved(tiny_config), "--backend", "nccl", "--quiet"]
    )
    assert "--backend nccl needs CUDA GPUs" in one_line_failure(result)


def _saved(config) -> str:
    """`config` as a --config file beside its runs folder."""
    path = Path(config.runs_dir).parent / "cfg.json"
    path.write_text(json.dumps(config.to_dict()))
    return str(path)


def test_gloo_sync_batchnorm_on_one_process_is_batchnorm() -> None:
    """Forward, gradients and running statistics of the CPU SyncBatchNorm against BatchNorm2d:
    with one process the global batch is the local one."""
    import copy

    import torch
    import torch.distributed as dist

    from cifarnet.training.sync_batchnorm import GlooSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3))
    for bn in plain:
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    synced = convert_sync_batchnorm(copy.deepcopy(plain), cuda=False)
    assert all(isinstance(m, GlooSyncBatchNorm) for m in synced)
    x = torch.randn(8, 3, 5, 5) * 3 + 10  # a mean large against the spread
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        outputs = []
        for model in (plain, synced):
            xi = x.clone().requires_grad_()
            for _ in range(2):  # the running statistics of two steps
                y = model(xi)
            (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
            outputs.append((y, xi.grad, model[0].weight.grad, model[1].bias.grad))
    finally:
        dist.destroy_process_group()
    for a, b in zip(*outputs, strict=True):
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    for a, b in zip(plain.state_dict().values(), synced.state_dict().values(), strict=True):
        assert torch.allclose(a.double(), b.double(), atol=1e-5)
    assert plain.state_dict().keys() == synced.state_dict().keys()


def test_nproc_passes_the_command_on_to_torchruns_launcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cifarnet.training.launch as launch

    calls = []
    monkeypatch.setattr(launch, "launch", lambda *args: calls.append(args) or 130)
    args = ["--nproc", "2", "--lr", "0.5", "--no-nesterov", "--sync-bn", "--resume", "x/last.pt"]
    result = CliRunner().invoke(app, ["train", *args, "--quiet"])
    assert result.exit_code == 130  # the run's own code
    ((nproc, train_args, debug),) = calls
    assert nproc == 2 and not debug
    assert train_args == [
        "--lr", "0.5", "--no-nesterov", "--sync-bn", "--resume", "x/last.pt", "--quiet"
    ]  # fmt: skip
    result = CliRunner().invoke(app, ["train", "--nproc", "2", "--seeds", "0,1"])
    assert "cannot be combined with --seeds" in one_line_failure(result)
