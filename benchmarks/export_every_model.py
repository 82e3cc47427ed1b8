"""Export every registered model to ONNX and to TorchScript with cifarnet's parity check, on the
torch this Python has: which ONNX exporter made each file, its max |delta logit| against
PyTorch and the limit it had to meet, the seconds, or the one-line error.

Each model is a freshly initialised network at 100 classes whose BatchNorm statistics were
measured on a seeded batch (a fresh BatchNorm's 0 / 1 would not scale the activations, as after
training), saved as a checkpoint with CIFAR-100's shape of data info; it is verified on seeded
random images. `make compat` runs this in each environment it builds.

    python benchmarks/export_every_model.py --out exports.json [--models fastnet resnet20]

Prints one line per model and format; exits 1 when any export fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cifarnet.data.datasets import data_info
from cifarnet.errors import CifarnetError
from cifarnet.io.checkpoint import best_payload, save_checkpoint
from cifarnet.models import count_parameters, create_model, list_models, model_config
from cifarnet.tasks.exporting import SUFFIXES, export

CLASSES = 100


def fresh_checkpoint(name: str, path: Path) -> Path:
    """`name` at 100 classes, BatchNorm statistics measured on one seeded batch, as a best.pt
    with placeholder class names."""
    torch.manual_seed(0)
    model = create_model(name, CLASSES)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None  # a cumulative average: one batch sets the statistics outright
    with torch.no_grad():
        model.train()(torch.randn(4, 3, 32, 32))
    classes = [f"class_{i:02d}" for i in range(CLASSES)]
    supers = [f"super_{i:02d}" for i in range(20)]
    data = data_info("cifar100", classes, supers, [c % 20 for c in range(CLASSES)])
    payload = best_payload(model_config(name, CLASSES), model.state_dict(), data, {}, {})
    save_checkpoint(payload, path)
    return path


def export_model(name: str, folder: Path, verify_images: int) -> dict[str, Any]:
    """One model's row: {"model", "parameters", "onnx": {...}, "torchscript": {...}}, each
    format's entry holding ok, exporter, max_abs_diff, limit and seconds, or ok and error."""
    checkpoint = fresh_checkpoint(name, folder / f"{name}.pt")
    row: dict[str, Any] = {"model": name, "parameters": _parameters(name)}
    no_data = folder / "no-data"  # verified on seeded random images, whatever this machine holds
    no_data.mkdir(exist_ok=True)
    for fmt, suffix in SUFFIXES.items():
        t0 = time.perf_counter()
        try:
            result = export(
                checkpoint,
                [fmt],
                out=folder / f"{name}{suffix}",
                data_dir=no_data,
                verify_images=verify_images,
            )
        except CifarnetError as exc:
            row[fmt] = {"ok": False, "error": str(exc), "seconds": time.perf_counter() - t0}
            continue
        (made,) = result.files
        row[fmt] = {
            "ok": True,
            "exporter": made.exporter or "torch.jit.trace",
            "max_abs_diff": max(p.max_abs_diff for p in made.parity),
            "limit": min(p.limit for p in made.parity),
            "seconds": round(made.seconds, 2),
        }
    return row


def _parameters(name: str) -> int:
    with torch.device("meta"):
        return count_parameters(create_model(name, CLASSES))


def _line(row: dict[str, Any]) -> str:
    cells = []
    for fmt in SUFFIXES:
        entry = row[fmt]
        if entry["ok"]:
            cells.append(
                f"{fmt} ok ({entry['exporter']}, max |delta logit| {entry['max_abs_diff']:.2e}"
                f" <= {entry['limit']:.2e}, {entry['seconds']:.1f} s)"
            )
        else:
            cells.append(f"{fmt} FAILED: {entry['error']}")
    return f"{row['model']}: " + "; ".join(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the rows here as JSON")
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--verify-images", type=int, default=32, help="default: 32")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cifarnet-exports-") as tmp:
        for name in args.models or list_models():
            rows.append(export_model(name, Path(tmp), args.verify_images))
            print(_line(rows[-1]), flush=True)
    report = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "models": rows,
        "failed": [r["model"] for r in rows if not all(r[fmt]["ok"] for fmt in SUFFIXES)],
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
