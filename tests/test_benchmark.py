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
    import cifarnet.benchmarking

    monkeypatch.setattr(cifarnet.benchmarking, "cpu_has_native_bf16", lambda: True)
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
    assert rows["channels_last"].tolist() == [False, False, True, True, False]
    assert (rows["batch_size"] == 4).all()
    assert (rows["batches"] >= 2).all()
    assert (rows["images_per_second"] > 0).all()
    ms = 1000 * 4 / rows["images_per_second"]
    assert ms.to_numpy() == pytest.approx(rows["ms_per_batch"].to_numpy(), rel=1e-6)
    assert "images/s" in result.output and "onnxruntime" in result.output


def test_no_native_bf16_skips_that_row_and_says_why(run, monkeypatch):
    import cifarnet.benchmarking
    from cifarnet.benchmarking import benchmark

    monkeypatch.setattr(cifarnet.benchmarking, "cpu_has_native_bf16", lambda: False)
    result = benchmark(
        run / "best.pt", device="cpu", batch_size=2, seconds=0.01, train=False, onnx=False
    )
    assert [(r.mode, r.precision) for r in result.rows] == [("inference", "fp32")]
    assert len(result.skipped) == 1 and "no native bf16" in result.skipped[0]
    assert result.model == "resnet" and result.parameters > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x.pt", "--model", "resnet18"], "give a checkpoint or --model, not both"),
        (["--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["--model", "resnet18", "--seconds", "0"], "--seconds must be positive"),
        (["model.onnx"], "benchmark takes a checkpoint (.pt)"),
    ],
)
def test_option_errors_are_one_line(args, message):
    result = runner.invoke(app, ["benchmark", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
