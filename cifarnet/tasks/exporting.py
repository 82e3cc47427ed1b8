"""`export`: a checkpoint -> ONNX and/or TorchScript, each verified against PyTorch before it
is given its final name.

Both formats hold `NormalizedModel`, so they share the checkpoint-independent input contract of
`cifarnet.tasks.inference.INPUT_CONTRACT` (float32 RGB NCHW in [0, 1], normalisation inside), and
both carry the class names, superclass names, mean/std and the contract as metadata:

* ONNX: a dynamic batch axis; `metadata_props` hold "cifarnet" (all of it as JSON, what
  `cifarnet evaluate / predict model.onnx` read), plus, for other tools, "classes",
  "superclasses", "fine_to_coarse", "mean", "std" (JSON), "cifarnet_version", "dataset",
  "model", "input_contract" (text) and "exporter" ("dynamo" or "torchscript": which of torch's
  ONNX exporters made the graph, see `cifarnet.tasks.onnx_graph`).
* TorchScript: `torch.jit.load(path, _extra_files={"cifarnet.json": "", "input_contract.txt":
  ""})` loads it with torch alone and fills in the same metadata.

Verification: the written file is loaded back (onnxruntime / torch.jit.load) and run on at
least 256 images (the dataset's test images when they are at hand, else seeded random ones) at
batch sizes 1 and 64; its logits are compared with the PyTorch model's in fp32. A max |delta
logit| over the parity limit, or any top-1 that differs, and the export fails: the temporary
file is deleted and nothing (or the earlier file) stays under the output name. The limit is
PARITY_TOLERANCE of the logit scale (the largest |logit| PyTorch gives on those images, at
least 1): fp32 rounding grows with the logits and with depth, so an absolute limit would fail
a deep network (ResNet-101: 2.0e-4 at a logit scale of 6.1) for the same rounding that a
shallow one stays under.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from cifarnet.data.datasets import load_dataset
from cifarnet.errors import (
    CifarnetError,
    ConfigError,
    DataError,
    ExportError,
    OutputError,
    one_line,
)
from cifarnet.io.atomic import atomic_write
from cifarnet.io.checkpoint import load_checkpoint, load_model
from cifarnet.io.tables import check_new_files, make_parent
from cifarnet.tasks.inference import (
    INPUT_CONTRACT,
    INPUT_NAME,
    ONNX_INSTALL_HINT,
    ModelInfo,
    NormalizedModel,
    check_finite,
    contract_input,
    find_data_dir,
    onnx_info,
    onnx_session,
    resolve_model_path,
)
from cifarnet.tasks.onnx_graph import check_known_opset, check_opset, export_graph

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
VERIFY_BATCH_SIZES = (1, 64)
# fp32 logits: rounding noise only; larger means the graph computes something else
PARITY_TOLERANCE = 1e-4
TORCHSCRIPT_FILES = ("cifarnet.json", "input_contract.txt")


@dataclass
class Parity:
    """The exported model against PyTorch (fp32) on `images` images at one batch size."""

    batch_size: int
    images: int
    max_abs_diff: float  # max |delta logit| over all images and classes
    top1_agreement: float  # percent of images with the same top-1 class
    limit: float  # the largest max_abs_diff allowed (see parity_limit)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.limit and self.top1_agreement == 100.0


def parity_limit(reference: torch.Tensor) -> float:
    """PARITY_TOLERANCE of the logit scale: the largest |logit| in `reference` (PyTorch's
    fp32 logits, (N, classes)), at least 1."""
    return PARITY_TOLERANCE * max(1.0, reference.abs().max().item())


class OnnxFile(NamedTuple):
    data: bytes  # the serialised ModelProto
    exporter: str  # which exporter made it: "dynamo" or "torchscript"


@dataclass
class ExportedFile:
    format: str
    path: Path
    size_bytes: int
    seconds: float  # export and verification
    parity: list[Parity] = field(default_factory=list)
    exporter: str = ""  # ONNX: "dynamo" or "torchscript" (see onnx_graph); TorchScript: ""


@dataclass
class ExportResult:
    checkpoint: str
    defaulted: bool  # the checkpoint was picked as the newest run's best.pt
    verify_images: str  # what the verification ran on, e.g. "256 test images"
    files: list[ExportedFile]


def export(
    checkpoint: str | os.PathLike | None = None,
    formats: Sequence[str] = ("onnx",),
    *,
    out: str | os.PathLike | None = None,
    opset: int | None = None,
    force: bool = False,
    data_dir: str | os.PathLike | None = None,
    verify_images: int = 256,
) -> ExportResult:
    """Export a checkpoint (default: the newest runs/*/best.pt) to ONNX and/or TorchScript.

    `out`: the file for a single format; a folder; or, for both formats, a name whose suffix
    is replaced (model.onnx + model.torchscript.pt). Default: model.onnx /
    model.torchscript.pt next to the checkpoint. Existing files are refused unless `force`.
    `opset`: ONNX opset (default: the exporter's choice). Raises ExportError when a
    verification fails, leaving no file behind.
    """
    formats = tuple(dict.fromkeys(formats))
    if not formats:
        raise ConfigError("nothing to export: choose --onnx and/or --torchscript")
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if verify_images < 1:
        raise ConfigError(f"verify_images must be positive, got {verify_images}")
    path, defaulted = resolve_model_path(checkpoint)
    if path.suffix.lower() == ".onnx":
        raise ConfigError(f"{path} is already an ONNX file; export takes a checkpoint (.pt)")
    targets = output_paths(path, formats, out)
    for target in targets.values():
        if target.exists() and target.samefile(path):  # not even with force: it is the weights
            raise OutputError(
                f"--out {target} is the checkpoint being exported; choose another name"
            )
    check_new_files(list(targets.values()), force)
    if "onnx" in formats:
        _require_onnx()
    ckpt = load_checkpoint(path)
    info = ModelInfo.from_checkpoint(ckpt, str(path))
    model = NormalizedModel(load_model(ckpt, path), info.mean, info.std).eval()
    images, description = _verification_images(info, data_dir, verify_images)
    x = contract_input(torch.device("cpu"))(images)
    with _one_thread():
        reference = check_finite(_batched(model, x, 64), path)
    files = [
        _export_one(fmt, model, info, opset, targets[fmt], x, reference, description)
        for fmt in formats
    ]
    return ExportResult(str(path), defaulted, description, files)


def _export_one(
    fmt: str,
    model: NormalizedModel,
    info: ModelInfo,
    opset: int | None,
    target: Path,
    x: torch.Tensor,
    reference: torch.Tensor,
    description: str,
) -> ExportedFile:
    """Export, write to a temporary file, verify that file, then rename it to `target`."""
    t0 = time.perf_counter()
    data, exporter = (
        onnx_bytes(model, info, opset) if fmt == "onnx" else (torchscript_bytes(model, info), "")
    )
    load = _onnx_runner(info) if fmt == "onnx" else _torchscript_runner(info)
    parity: list[Parity] = []

    def check(tmp: Path) -> None:
        forward = load(tmp)
        with _one_thread():
            parity.extend(_compare(forward, x, reference, bs) for bs in VERIFY_BATCH_SIZES)
        _raise_if_failed(fmt, target, parity, description)

    make_parent(target)
    atomic_write(target, lambda f: f.write(data), check=check)
    return ExportedFile(fmt, target, len(data), time.perf_counter() - t0, parity, exporter)


def output_paths(
    checkpoint: Path, formats: Sequence[str], out: str | os.PathLike | None
) -> dict[str, Path]:
    """Where each format is written: next to the checkpoint, in the folder `out`, or at `out`
    itself when it names a file (x.onnx or x.pt; with both formats asked for, the other is
    written beside it: x.onnx and x.torchscript.pt)."""
    if out is None:
        return {fmt: checkpoint.parent / f"model{SUFFIXES[fmt]}" for fmt in formats}
    text, out = os.fspath(out), Path(out)
    if out.exists() and not out.is_dir() and not out.suffix:
        raise ConfigError(
            f"--out {out} is an existing file without a suffix; give a folder, or a name ending "
            "in .onnx or .pt"
        )
    if out.is_dir() or text.endswith(("/", os.sep)) or not out.suffix:
        # a folder, existing or to be made: a name without a suffix is never taken for a file
        return {fmt: out / f"model{SUFFIXES[fmt]}" for fmt in formats}
    name = out.name.lower()
    if len(formats) == 1:
        fmt = formats[0]
        wanted = ".onnx" if fmt == "onnx" else ".pt"
        if not name.endswith(wanted):
            kind = {"onnx": "an ONNX", "torchscript": "a TorchScript"}[fmt]
            raise ConfigError(f"--out {out}: {kind} file name must end in {wanted}")
        return {fmt: out}
    for suffix in (".onnx", ".torchscript.pt", ".pt"):
        if name.endswith(suffix):
            base = out.name[: -len(suffix)]
            return {fmt: out.with_name(base + SUFFIXES[fmt]) for fmt in formats}
    raise ConfigError(f"--out {out}: give a folder, or a name ending in .onnx or .pt")


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the torch.onnx exporter needs it)
    except ImportError as exc:
        raise CifarnetError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing); "
            f"{ONNX_INSTALL_HINT}"
        ) from None


def onnx_bytes(model: NormalizedModel, info: ModelInfo, opset: int | None = None) -> OnnxFile:
    """The model as a serialised ONNX graph with a dynamic batch axis and cifarnet metadata
    (see onnx_graph for which exporter makes it)."""
    _require_onnx()  # before importing onnx: a missing package is one line, not a traceback
    import onnx

    check_known_opset(opset)
    proto, exporter = export_graph(model, info.image_size, opset)
    check_opset(proto, opset)
    proto.doc_string = INPUT_CONTRACT
    onnx.helper.set_model_props(proto, {**_metadata(info), "exporter": exporter})
    return OnnxFile(proto.SerializeToString(), exporter)


def torchscript_bytes(model: NormalizedModel, info: ModelInfo) -> bytes:
    """The model traced to TorchScript (batch size free), metadata as extra files."""
    example = torch.rand(2, 3, info.image_size, info.image_size)
    try:
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export in recent torch releases; the
            # TorchScript file format is still what torch-only deployments load.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # check_trace=False: the verification below is the stricter check
            traced = torch.jit.trace(model, example, check_trace=False)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files=_torchscript_files(info))
    except Exception as exc:
        raise ExportError(f"TorchScript export failed: {one_line(exc)}") from None
    return buffer.getvalue()


def _metadata(info: ModelInfo) -> dict[str, str]:
    from cifarnet import __version__

    return {
        "cifarnet": info.to_json(),
        "cifarnet_version": __version__,
        "dataset": info.dataset,
        "model": info.model.get("name", ""),
        "classes": json.dumps(info.classes),
        "superclasses": json.dumps(info.superclasses),
        "fine_to_coarse": json.dumps(info.fine_to_coarse),
        "mean": json.dumps(info.mean),
        "std": json.dumps(info.std),
        "input_contract": INPUT_CONTRACT,
    }


def _torchscript_files(info: ModelInfo) -> dict[str, str]:
    return {"cifarnet.json": info.to_json(), "input_contract.txt": INPUT_CONTRACT}


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, ModelInfo]:
    """A cifarnet TorchScript export and its metadata (torch alone is enough for this)."""
    files = dict.fromkeys(TORCHSCRIPT_FILES, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return module, ModelInfo.from_json(files["cifarnet.json"], str(path))


def _onnx_runner(info: ModelInfo) -> Callable[[Path], Callable]:
    def load(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            session = onnx_session(path)
        except CifarnetError as exc:  # e.g. an opset newer than this onnxruntime runs
            raise ExportError(f"onnxruntime cannot load the exported model: {exc}") from None
        if not onnx_info(session, str(path)).same_as(info):
            raise ExportError(f"{path}: the metadata read back differ from the checkpoint's")

        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {INPUT_NAME: x.contiguous().numpy()})[0])

        return forward

    return load


def _torchscript_runner(info: ModelInfo) -> Callable[[Path], Callable]:
    def load(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        module, stored = load_torchscript(path)
        if not stored.same_as(info):
            raise ExportError(f"{path}: the metadata read back differ from the checkpoint's")
        return module

    return load


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: at batch size 1 more threads gain nothing, and on a
    busy machine every parallel region waits for a descheduled thread (measured on 2 shared
    cores: 970 ms per TorchScript forward with 2 threads against 11 ms with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _batched(forward: Callable, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([forward(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def _compare(
    forward: Callable, x: torch.Tensor, reference: torch.Tensor, batch_size: int
) -> Parity:
    logits = _batched(forward, x, batch_size)
    same = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    diff = (logits - reference).abs().max().item()
    return Parity(batch_size, len(x), diff, 100.0 * same, parity_limit(reference))


def _raise_if_failed(fmt: str, target: Path, parity: list[Parity], images: str) -> None:
    for p in parity:
        if not p.ok:
            raise ExportError(
                f"{fmt} export of {target} failed verification on {images} at batch size "
                f"{p.batch_size}: max |delta logit| {p.max_abs_diff:.3g} (limit {p.limit:.3g}),"
                f" top-1 agreement {p.top1_agreement:.2f}%; no file was written"
                + (" (the existing file is unchanged)" if target.exists() else "")
            )


def _verification_images(
    info: ModelInfo, data_dir: str | os.PathLike | None, count: int
) -> tuple[torch.Tensor, str]:
    """uint8 (count, 3, S, S): the dataset's test images when it is at hand (topped up with
    training images if the test split is smaller), else seeded random pixels."""
    try:
        data = load_dataset(info.dataset, find_data_dir(info, data_dir), download=False)
    except DataError:
        data = None
    if data is not None and len(data.test_images) + len(data.train_images) >= count:
        test = data.test_images[:count]
        extra = data.train_images[: count - len(test)]
        what = f"{len(test)} test images" + (f" + {len(extra)} train images" if len(extra) else "")
        return torch.cat([test, extra]), what
    g = torch.Generator().manual_seed(0)
    size = (count, 3, info.image_size, info.image_size)
    return torch.randint(0, 256, size, generator=g, dtype=torch.uint8), f"{count} random images"
