"""cifarnet benchmark: rows per runtime and precision, CSV out, and its option errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tiny_run import trained_run
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


def test_benchmark_rows_and_csv(run, tmp_path, monkeypatch):
    import cifarnet.tasks.benchmarking

    monkeypatch.setattr(cifarnet.tasks.benchmarking, "cpu_has_native_bf16", lambda: True)
    out = tmp_path / "bench.csv"
    args = [str(run / "best.pt"), "--device", "cpu", "--batch-size", "4", "--seconds", "0.05"]
    result = runner.invoke(app, ["benchmark", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert list(rows.columns) == [
        "mode",
        "runtime",
        "precision",
        "channels_last",
        "device",
        "batch_size",
        "images_per_second",
        "ms_per_batch",
        "batches",
    ]
    got = list(zip(rows["mode"], rows["runtime"], rows["precision"], strict=True))
    assert got == [
        ("train", "eager", "fp32"),
        ("inference", "eager", "fp32"),
        ("train", "eager", "bf16"),
        ("inference", "eager", "bf16"),
        ("inference", "onnxruntime", "fp32"),
    ]
    # the PyTorch rows in the layout a CPU run uses; ONNX Runtime takes contiguous arrays
    assert rows["channels_last"].tolist() == [True, True, True, True, False]
    assert (rows["batch_size"] == 4).all()
    assert (rows["batches"] >= 2).all()
    assert (rows["images_per_second"] > 0).all()
    ms = 1000 * 4 / rows["images_per_second"]
    assert ms.to_numpy() == pytest.approx(rows["ms_per_batch"].to_numpy(), rel=1e-6)
    assert "images/s" in result.output and "onnxruntime" in result.output


def test_no_native_bf16_skips_that_row_and_says_why(run, monkeypatch):
    import cifarnet.tasks.benchmarking
    from cifarnet.tasks.benchmarking import benchmark

    monkeypatch.setattr(cifarnet.tasks.benchmarking, "cpu_has_native_bf16", lambda: False)
    result = benchmark(
        run / "best.pt", device="cpu", batch_size=2, seconds=0.01, train=False, onnx=False
    )
    assert [(r.mode, r.precision) for r in result.rows] == [("inference", "fp32")]
    assert len(result.skipped) == 1 and "no native bf16" in result.skipped[0]
    assert result.model == "resnet" and result.parameters > 0


def test_missing_onnx_package_skips_the_onnx_row_and_says_how_to_install(run, monkeypatch):
    import sys

    from cifarnet.tasks.benchmarking import benchmark

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if `pip install cifarnet[onnx]` was not run
    result = benchmark(run / "best.pt", device="cpu", batch_size=2, seconds=0.01, train=False)
    assert [r.runtime for r in result.rows] == ["eager"] * len(result.rows)
    assert any("onnxruntime:" in s and "pip install" in s for s in result.skipped)


def test_out_of_memory_is_one_line(run, monkeypatch):
    import cifarnet.tasks.benchmarking

    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(cifarnet.tasks.benchmarking, "_time_torch", no_memory)
    args = [str(run / "best.pt"), "--device", "cpu", "--batch-size", "100000000"]
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "out of memory on cpu at batch size 100000000" in result.stderr


def test_no_run_benchmarks_a_fresh_reference_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--device", "cpu", "--batch-size", "2", "--seconds", "0.01", "--no-train", "--no-onnx"]
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code == 0, result.output
    assert "resnet_reference" in result.stdout and "using" not in result.output


def test_onnxruntime_uses_as_many_threads_as_torch(run):
    import torch

    from cifarnet.io.checkpoint import load_checkpoint, load_model
    from cifarnet.tasks.exporting import onnx_bytes
    from cifarnet.tasks.inference import ModelInfo, NormalizedModel, onnx_session

    ckpt = load_checkpoint(run / "best.pt")
    info = ModelInfo.from_checkpoint(ckpt)
    net = NormalizedModel(load_model(ckpt, run / "best.pt"), info.mean, info.std).eval()
    graph = onnx_bytes(net, info).data
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert onnx_session(graph).get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x.pt", "--model", "resnet18"], "give a checkpoint or --model, not both"),
        (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["--model", "resnet18", "--seconds", "0"], "--seconds must be a positive number"),
        (["--model", "resnet18", "--seconds", "inf"], "--seconds must be a positive number"),
        (["model.onnx"], "benchmark takes a checkpoint (.pt)"),
    ],
)
def test_option_errors_are_one_line(args, message):
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_out_must_name_a_csv_file_and_is_checked_before_any_timing(tmp_path, monkeypatch):
    import cifarnet.tasks.benchmarking

    def never(*args, **kwargs):
        raise AssertionError("timed before refusing --out")

    monkeypatch.setattr(cifarnet.tasks.benchmarking, "_time_torch", never)
    result = runner.invoke(app, ["benchmark", "--no-onnx", "--out", str(tmp_path / "bench.txt")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "give a .csv file name (e.g. bench.csv)" in result.stderr
    assert not (tmp_path / "bench.txt").exists()


def test_a_run_folder_stands_for_its_best_pt(run):
    args = [str(run), "--device", "cpu", "--batch-size", "2", "--seconds", "0.01"]
    result = runner.invoke(app, ["benchmark", *args, "--no-train", "--no-onnx"])
    assert result.exit_code == 0, result.output
    assert f"using {run / 'best.pt'} (the run's best.pt)" in result.stderr
