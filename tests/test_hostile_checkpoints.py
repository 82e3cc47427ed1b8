"""Checkpoints and ONNX metadata made to hurt: class lists of the wrong length or type, maps out of
range, a class count of 10^9, NaN or zero normalisation, NaN weights. Each is refused in one line
naming the file, before any allocation its numbers would size or any "nan%" result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_run import (
    load_best,
    one_image_folder,
    one_line_failure,
    save_checkpoint_dict,
    trained_run,
)
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.errors import CheckpointError
from cifarnet.tasks.inference import ModelInfo

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


def _crafted(run: Path, tmp_path: Path, change) -> Path:
    ckpt = load_best(run)
    change(ckpt)
    return save_checkpoint_dict(ckpt, tmp_path / "crafted.pt")


CRAFTED = [
    (lambda c: c["model"].update(num_classes=10**9), "its model has 1000000000 classes"),
    (lambda c: c["model"].update(num_classes=True), "its model has True classes"),
    (lambda c: c["data"].update(classes=["a"] * 99), "its model has 100 classes but it names 99"),
    (lambda c: c["data"].update(classes=[1] * 100), "its class names are not a list of"),
    (lambda c: c["data"].update(classes="x" * 100), "its class names are not a list of"),
    (
        lambda c: c["data"].update(fine_to_coarse=[25] * 100),
        "fine-to-coarse map holds superclass numbers outside 0..19",
    ),
    (
        lambda c: c["data"].update(fine_to_coarse=[0] * 3),
        "fine-to-coarse map does not list one superclass per class",
    ),
    (lambda c: c["data"].update(superclasses=None), "superclass names or their map, not both"),
    (lambda c: c["data"].update(mean=[float("nan")] * 3), "normalisation mean is not 3 finite"),
    (lambda c: c["data"].update(std=[0.0, 0.2, 0.2]), "normalisation std [0.0, 0.2, 0.2] has a"),
    (lambda c: c["data"].update(std=[1e309] * 3), "normalisation std is not 3 finite numbers"),
    (lambda c: c["data"].update(std=[0.2] * 2), "normalisation std is not 3 finite numbers"),
    (lambda c: c.update(model="resnet"), "its model entry is malformed"),
]


@pytest.mark.parametrize(("change", "message"), CRAFTED)
def test_crafted_checkpoint_metadata_is_one_line_naming_the_file(
    run: Path, tmp_path: Path, change, message: str
) -> None:
    path = _crafted(run, tmp_path, change)
    args = [
        "predict",
        str(one_image_folder(tmp_path / "photos")),
        "--model",
        str(path),
        "--device",
        "cpu",
    ]
    line = one_line_failure(runner.invoke(app, args))
    assert f"{path}: " in line and message in line


def test_a_huge_class_count_is_refused_before_building_the_model(run: Path, tmp_path: Path):
    from cifarnet.io.checkpoint import load_model

    ckpt = load_best(run)
    ckpt["model"]["num_classes"] = 10**9
    with pytest.raises(CheckpointError, match="1000000000 classes"):
        load_model(ckpt, "x.pt")  # a 10^9-way head would allocate gigabytes first


def _onnx_json(run: Path, **changes) -> str:
    info = json.loads(ModelInfo.from_checkpoint(load_best(run)).to_json())
    return json.dumps({**info, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ["a"] * 10**5}, "its class names are not a list of 1..10000"),
        ({"std": [0, 0, 0]}, "has a value <= 0"),
        ({"fine_to_coarse": [-1] * 100}, "outside 0..19"),
        ({"mean": ["a", "b", "c"]}, "mean is not 3 finite numbers"),
        ({"image_size": 10**12}, "not a plausible image side"),
    ],
)
def test_crafted_onnx_metadata_is_refused(run: Path, changes: dict, message: str) -> None:
    with pytest.raises(CheckpointError, match=r"model\.onnx: ") as err:
        ModelInfo.from_json(_onnx_json(run, **changes), "model.onnx")
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["[" * 100_000, "x" * (2 << 20), "[1, 2]", '{"a": 1}'])
def test_malformed_onnx_metadata_is_one_line(text: str) -> None:
    with pytest.raises(CheckpointError, match=r"model\.onnx: its cifarnet metadata") as err:
        ModelInfo.from_json(text, "model.onnx")
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def _nan_weights(ckpt: dict) -> None:
    for name, value in ckpt["state_dict"].items():
        if value.is_floating_point():
            ckpt["state_dict"][name] = torch.full_like(value, float("nan"))


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_nan_weights_fail_in_one_line_instead_of_printing_nan(
    run: Path, tmp_path: Path, cifar100_dir: Path, command: str
) -> None:
    path = _crafted(run, tmp_path, _nan_weights)
    data = ["--data-dir", str(cifar100_dir)]
    args = {
        "predict": ["predict", str(one_image_folder(tmp_path / "photos")), "--model", str(path)],
        "evaluate": ["evaluate", str(path), *data, "--out", str(tmp_path / "e.csv")],
        "export": ["export", str(path), "--torchscript", *data],
    }[command]
    result = runner.invoke(app, [*args, "--device", "cpu"] if command != "export" else args)
    line = one_line_failure(result)
    assert f"{path}: the model's outputs are NaN or infinite" in line
    assert "nan%" not in result.output.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.pt", "photos"]  # no output
