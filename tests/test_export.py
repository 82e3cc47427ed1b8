"""cifarnet export: ONNX and TorchScript round trips with the parity check, the metadata and
input contract, and what is (not) left behind when a write or a verification fails."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import copy_run, trained_run
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, str]:
    """`cifarnet export --onnx --torchscript` with no checkpoint, from a folder whose newest
    run is a copy of the tiny run: (that run folder, the command's output)."""
    root = tmp_path_factory.mktemp("export")
    copy_run(run, root / "runs", "a")
    newest = copy_run(run, root / "runs", "b")
    os.utime(root / "runs" / "a" / "best.pt", (1, 1))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CIFARNET_DATA", str(root / "no-data"))  # only the run's own data is at hand
        result = runner.invoke(app, ["export", "--onnx", "--torchscript"])
    assert result.exit_code == 0, result.output
    return newest, result.output


def _reference(run: Path, images: torch.Tensor) -> torch.Tensor:
    """PyTorch fp32 logits for uint8 images, normalised by hand."""
    from cifarnet.io.checkpoint import load_checkpoint, load_model

    ckpt = load_checkpoint(run / "best.pt")
    net = load_model(ckpt).eval()
    mean = torch.tensor(ckpt["data"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["data"]["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return net((images.float() / 255 - mean) / std)


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_export_defaults_to_the_newest_run_and_reports_parity(exported):
    folder, output = exported
    assert f"using {Path('runs') / 'b' / 'best.pt'}" in output
    assert (folder / "model.onnx").is_file() and (folder / "model.torchscript.pt").is_file()
    assert "200 test images + 56 train images" in output  # the run's own data was at hand
    assert "max |delta" in output  # the column's heading may wrap on a narrow terminal
    assert len(re.findall(r"\d\.\d\de[-+]\d\d", output)) == 4  # its value, 2 formats x 2 batches
    assert output.count("100.00%") == 4  # top-1 agreement, 2 formats x batch sizes 1 and 64
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_onnx_contract_metadata_and_dynamic_batch(exported):
    import onnx
    import onnxruntime as ort

    folder, _ = exported
    model = onnx.load(str(folder / "model.onnx"))
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "images"
    assert dims[0].dim_param and not dims[0].dim_value  # a named, dynamic batch axis
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == [f"class_{i:02d}" for i in range(100)]
    assert json.loads(props["superclasses"]) == [f"super_{i:02d}" for i in range(20)]
    assert json.loads(props["mean"]) == pytest.approx([0.507, 0.487, 0.441])
    assert json.loads(props["std"]) == pytest.approx([0.267, 0.256, 0.276])
    assert "values in [0, 1]" in props["input_contract"]
    assert "[0, 1]" in model.doc_string
    # which exporter made it: the dynamo one where this torch translates every operator
    assert props["exporter"] in ("dynamo", "torchscript")
    assert f"(onnx, {props['exporter']} exporter, verified" in exported[1]

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 3, 70):
        images = _images(n)
        (logits,) = session.run(None, {"images": (images.float() / 255).numpy()})
        assert logits.shape == (n, 100)
        assert np.abs(logits - _reference(folder, images).numpy()).max() < 1e-4


def test_torchscript_loads_with_torch_alone(exported):
    folder, _ = exported
    path = folder / "model.torchscript.pt"
    code = (
        "import json, sys, warnings, torch\n"
        "warnings.simplefilter('ignore')\n"
        "files = {'cifarnet.json': '', 'input_contract.txt': ''}\n"
        f"m = torch.jit.load({str(path)!r}, _extra_files=files)\n"
        "x = torch.rand(5, 3, 32, 32)\n"
        "info = json.loads(files['cifarnet.json'])\n"
        "print(tuple(m(x).shape), len(info['classes']), 'cifarnet' in sys.modules)\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["(5,", "100)", "100", "False"], out.stderr
    result = runner.invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is a TorchScript export, not a checkpoint" in result.stderr

    from cifarnet.tasks.exporting import load_torchscript

    module, info = load_torchscript(path)
    assert info.classes[3] == "class_03" and info.mean == pytest.approx([0.507, 0.487, 0.441])
    images = _images(9)
    with torch.no_grad():
        logits = module(images.float() / 255)
    assert (logits - _reference(folder, images)).abs().max() < 1e-4


def test_onnx_evaluate_and_predict_match_the_checkpoint(exported, cifar100_dir, tmp_path):
    from PIL import Image

    from cifarnet.errors import DataError
    from cifarnet.tasks.evaluation import evaluate
    from cifarnet.tasks.prediction import predict

    folder, _ = exported
    kwargs = {"data_dir": cifar100_dir, "device": "cpu", "precision": "fp32"}
    torch_result = evaluate(folder / "best.pt", **kwargs)
    onnx_result = evaluate(folder / "model.onnx", data_dir=cifar100_dir)
    assert onnx_result.kind == "onnx"
    assert onnx_result.loss == pytest.approx(torch_result.loss, abs=1e-5)
    for key in ("top1", "top5", "superclass_top1"):
        assert getattr(onnx_result, key) == getattr(torch_result, key)
    assert onnx_result.ece == pytest.approx(torch_result.ece, abs=1e-3)
    assert torch.equal(onnx_result.confusion, torch_result.confusion)

    # without --data-dir, an export saved in its run's folder finds the data that run used
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARNET_DATA", str(tmp_path / "no-data"))
        alone = evaluate(folder / "model.onnx", download=False)
        assert (alone.images, alone.top1) == (onnx_result.images, onnx_result.top1)
        elsewhere = tmp_path / "elsewhere.onnx"  # not in a run folder: only the usual places
        elsewhere.write_bytes((folder / "model.onnx").read_bytes())
        with pytest.raises(DataError, match="not found in"):
            evaluate(elsewhere, download=False)

    for i in range(3):
        Image.new("RGB", (40 + i, 30), (60 * i, 90, 200 - 50 * i)).save(tmp_path / f"{i}.png")
    a = predict([tmp_path], folder / "best.pt", device="cpu", precision="fp32")
    b = predict([tmp_path], folder / "model.onnx")
    assert [p.labels for p in a.items] == [p.labels for p in b.items]
    assert np.allclose(
        [p.probabilities for p in a.items], [p.probabilities for p in b.items], atol=1e-5
    )


def test_existing_file_is_refused_then_replaced_with_force(run, tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"earlier export")
    args = ["export", str(run / "best.pt"), "--torchscript", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "m.pt already exists; pass --force" in result.output
    assert out.read_bytes() == b"earlier export"
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"earlier export"


def test_opset_is_the_one_asked_for_or_refused_in_one_line(run, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    args = ["export", str(run / "best.pt"), "--onnx", "--out", str(out), "--opset"]
    result = runner.invoke(app, [*args, "20"])
    assert result.exit_code == 0, result.output
    opsets = {o.domain: o.version for o in onnx.load(out).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 20
    # one the dynamo exporter cannot convert to: it keeps its own, which is refused, and no file
    # is left; where the TorchScript-based exporter made the file (torch 2.5, whose dynamo
    # exporter fails), that one converts to opset 9 exactly
    old = tmp_path / "old.onnx"
    result = runner.invoke(app, [*args, "9", "--out", str(old)])
    if "(onnx, torchscript exporter, verified" in result.output:
        assert result.exit_code == 0
        assert {o.domain: o.version for o in onnx.load(old).opset_import}[""] == 9
    else:
        assert result.exit_code == 1
        assert "--opset 9: the exporter cannot convert this network to it" in result.output
        assert "choose a higher one" in result.output
        assert not old.exists()
    result = runner.invoke(app, [*args, "99", "--out", str(tmp_path / "new.onnx")])
    assert result.exit_code == 1 and "the newest this onnx knows is" in result.output


def test_failed_verification_leaves_nothing_that_looks_valid(run, tmp_path, monkeypatch):
    import cifarnet.tasks.exporting

    monkeypatch.setattr(cifarnet.tasks.exporting, "PARITY_TOLERANCE", -1.0)  # nothing can pass
    new = tmp_path / "new.pt"
    result = runner.invoke(
        app, ["export", str(run / "best.pt"), "--torchscript", "--out", str(new)]
    )
    assert result.exit_code == 1
    assert "failed verification" in result.output and "no file was written" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one

    old = tmp_path / "old.pt"
    old.write_bytes(b"earlier export")
    args = ["export", str(run / "best.pt"), "--torchscript", "--out", str(old), "--force"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "the existing file is unchanged" in result.output
    assert old.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.pt"]


def test_out_naming_the_checkpoint_is_refused_even_with_force(run, tmp_path):
    source = copy_run(run, tmp_path, "r") / "best.pt"
    before = source.read_bytes()
    args = ["export", str(source), "--torchscript", "--out", str(source), "--force"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "is the checkpoint being exported; choose another name" in result.output
    assert source.read_bytes() == before


def test_out_below_a_file_is_refused_before_exporting(run, tmp_path, monkeypatch):
    import cifarnet.tasks.exporting

    def must_not_run(*args, **kwargs):
        raise AssertionError("exported before checking --out")

    monkeypatch.setattr(cifarnet.tasks.exporting, "torchscript_bytes", must_not_run)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    out = blocker / "deploy" / "m.pt"
    result = runner.invoke(
        app, ["export", str(run / "best.pt"), "--torchscript", "--out", str(out)]
    )
    assert result.exit_code == 1
    assert f"cannot write {out}: {blocker} is a file, not a folder" in result.output


def _export_raising(monkeypatch, cause: BaseException, *, fallback_works: bool = False) -> None:
    """torch.onnx.export fails the way torch's exporter does: a coloured first line, what
    stopped it as the cause. With `fallback_works`, only the dynamo exporter fails."""
    real_export = torch.onnx.export

    def failing_export(*args, dynamo=True, **kwargs):
        if fallback_works and not dynamo:
            return real_export(*args, dynamo=False, **kwargs)
        raise RuntimeError(
            "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of "
            "exporting the model to ONNX. Next steps:\n- ..."
        ) from cause

    monkeypatch.setattr(torch.onnx, "export", failing_export)


def test_onnx_export_failure_names_operator_and_torch_version(run, tmp_path, monkeypatch):
    _export_raising(monkeypatch, ValueError("unsupported operator aten::weird"))
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--onnx", "--out", str(out)])
    assert result.exit_code == 1
    reason = "unsupported operator aten::weird"  # the cause, without the colour codes
    assert result.stderr.strip() == (
        f"error: ONNX export failed at operator aten::weird with torch {torch.__version__} "
        f"(dynamo exporter: {reason}; TorchScript-based exporter: {reason})"
    )
    assert not out.exists()


def test_the_torchscript_based_exporter_stands_in_when_dynamo_fails(run, tmp_path, monkeypatch):
    import onnx

    _export_raising(
        monkeypatch, ValueError("No ONNX function found for aten.weird"), fallback_works=True
    )
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "(onnx, torchscript exporter, verified" in result.output
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert props["exporter"] == "torchscript"
    assert result.output.count("100.00%") == 2  # top-1 agreement at batch sizes 1 and 64


def test_ctrl_c_inside_the_onnx_exporter_is_an_abort(run, tmp_path, monkeypatch):
    _export_raising(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--onnx", "--out", str(out)])
    assert result.exit_code == 130
    assert "aborted" in result.stderr and "ONNX export failed" not in result.output
    assert not out.exists()


def test_missing_onnx_packages_say_how_to_install(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert "pip install 'cifarnet[onnx]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_output_paths():
    from cifarnet.errors import ConfigError
    from cifarnet.tasks.exporting import output_paths

    ckpt = Path("runs/x/best.pt")
    assert output_paths(ckpt, ["onnx"], None) == {"onnx": Path("runs/x/model.onnx")}
    both = output_paths(ckpt, ["onnx", "torchscript"], "deploy/net.onnx")
    assert both == {
        "onnx": Path("deploy/net.onnx"),
        "torchscript": Path("deploy/net.torchscript.pt"),
    }
    assert output_paths(ckpt, ["torchscript"], "a/b.pt") == {"torchscript": Path("a/b.pt")}
    for folder in ("deploy", "deploy/"):  # not there yet: made by the export
        assert output_paths(ckpt, ["onnx", "torchscript"], folder) == {
            "onnx": Path("deploy/model.onnx"),
            "torchscript": Path("deploy/model.torchscript.pt"),
        }
        assert output_paths(ckpt, ["onnx"], folder) == {"onnx": Path("deploy/model.onnx")}
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        output_paths(ckpt, ["onnx"], "model.pt")


def test_out_naming_an_existing_file_without_suffix_is_refused(tmp_path):
    from cifarnet.errors import ConfigError
    from cifarnet.tasks.exporting import output_paths

    existing = tmp_path / "deploy"
    existing.write_text("not a folder")
    with pytest.raises(ConfigError, match="existing file without a suffix"):
        output_paths(Path("runs/x/best.pt"), ["onnx"], existing)
    assert existing.read_text() == "not a folder"


def test_verification_images_fall_back_to_seeded_random(run, tmp_path, monkeypatch):
    import dataclasses

    from cifarnet.io.checkpoint import load_checkpoint
    from cifarnet.tasks.exporting import _verification_images
    from cifarnet.tasks.inference import ModelInfo

    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path))  # an empty data folder
    info = ModelInfo.from_checkpoint(load_checkpoint(run / "best.pt"))
    assert _verification_images(info, None, 256)[1] == "200 test images + 56 train images"
    no_data = dataclasses.replace(info, data_dir=None)  # as if the run's data were gone
    images, what = _verification_images(no_data, None, 300)
    assert what == "300 random images"
    assert images.shape == (300, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, _verification_images(no_data, None, 300)[0])  # seeded
