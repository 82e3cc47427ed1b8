"""Every registered model exports to ONNX and to TorchScript with the parity check, on the torch
this suite runs under: the export a user runs on a trained fastnet or resnet_reference is the
one tested here, whichever of torch's ONNX exporters makes it.

The exports are those of benchmarks/export_every_model.py (what `make compat` runs in each
environment), verified on 4 images here. The models up to 5 M parameters run by default (a few
seconds each on 2 busy cores); the large ones (ResNet-18 and up, the wide ResNets) with
CIFARNET_SLOW_TESTS=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from cifarnet.models import count_parameters, create_model, list_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from export_every_model import export_model

SLOW = os.environ.get("CIFARNET_SLOW_TESTS") == "1"
SMALL = 5_000_000  # parameters at 100 classes


def _case(name: str):
    with torch.device("meta"):
        parameters = count_parameters(create_model(name, 100))
    if parameters > SMALL and not SLOW:
        reason = f"{parameters / 1e6:.0f} M parameters: CIFARNET_SLOW_TESTS=1"
        return pytest.param(name, marks=pytest.mark.skip(reason))
    return name


@pytest.mark.parametrize("name", [_case(n) for n in list_models()])
def test_every_model_exports_with_parity(name, tmp_path) -> None:
    import onnx

    row = export_model(name, tmp_path, verify_images=4)
    for fmt in ("onnx", "torchscript"):
        entry = row[fmt]
        assert entry["ok"], entry.get("error")
        assert 0 <= entry["max_abs_diff"] <= entry["limit"]
    props = {p.key: p.value for p in onnx.load(tmp_path / f"{name}.onnx").metadata_props}
    assert props["exporter"] == row["onnx"]["exporter"] and props["model"] == name
    assert (tmp_path / f"{name}.torchscript.pt").is_file()
