"""A model as an ONNX graph, made by whichever of torch's two exporters can translate it.

The dynamo-based exporter (torch.export + onnxscript) is tried first: it is the one torch
develops. Whether it can translate a network depends on the torch release (torch 2.11's has no
translation of `aten.adaptive_max_pool2d` and no longer has the `fallback` option of earlier
releases; torch 2.5.1's fails on every cifarnet model with onnxscript 0.7.2), so when it
raises, the TorchScript-based exporter (`dynamo=False`, a trace) is tried. Which one made the
graph is stored in its metadata as "exporter" ("dynamo" or "torchscript"). When both fail, the
one-line error names the operator the message points at and the torch version.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import torch

from cifarnet.errors import ExportError, one_line
from cifarnet.tasks.inference import INPUT_NAME, OUTPUT_NAME

DYNAMO = "dynamo"
TORCHSCRIPT = "torchscript"
EXPORTER_NAMES = {DYNAMO: "dynamo exporter", TORCHSCRIPT: "TorchScript-based exporter"}
# "aten.adaptive_max_pool2d.default" (dynamo) or "aten::adaptive_max_pool2d" (TorchScript)
_OPERATOR = re.compile(r"\baten(?:\.|::)[A-Za-z0-9_]+")


class OnnxGraph(NamedTuple):
    proto: object  # onnx.ModelProto
    exporter: str  # DYNAMO or TORCHSCRIPT


def export_graph(model: torch.nn.Module, image_size: int, opset: int | None) -> OnnxGraph:
    """`model` (input (N, 3, S, S) float32, N free) as an ONNX ModelProto with the input and
    output names of the input contract. Raises ExportError when neither exporter can."""
    failures: dict[str, BaseException] = {}
    for exporter, make in ((DYNAMO, _dynamo), (TORCHSCRIPT, _torchscript)):
        example = torch.rand(2, 3, image_size, image_size)
        try:
            with _quiet():
                return OnnxGraph(make(model, example, opset), exporter)
        except Exception as exc:  # the exporters raise many types; all mean "could not export"
            cause = _innermost(exc)
            if isinstance(cause, KeyboardInterrupt):  # they wrap what stopped them, Ctrl-C too
                raise KeyboardInterrupt from None
            failures[exporter] = cause
    raise ExportError(_both_failed(failures))


def _dynamo(model: torch.nn.Module, example: torch.Tensor, opset: int | None) -> object:
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        verbose=False,
    )
    return program.model_proto


def _torchscript(model: torch.nn.Module, example: torch.Tensor, opset: int | None) -> object:
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=opset,
        verbose=False,
    )
    return onnx.load_from_string(buffer.getvalue())


def _innermost(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _both_failed(failures: dict[str, BaseException]) -> str:
    """One line: the torch version, the operator named by either failure (when one is), and
    each exporter's own reason, shortened."""
    reasons = {name: one_line(exc, limit=160) for name, exc in failures.items()}
    operator = next((m.group() for r in reasons.values() if (m := _OPERATOR.search(r))), None)
    what = f" at operator {operator}" if operator else ""
    each = "; ".join(f"{EXPORTER_NAMES[name]}: {reason}" for name, reason in reasons.items())
    return f"ONNX export failed{what} with torch {torch.__version__} ({each})"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' own chatter (deprecation notices, warnings about their internals,
    and the tracebacks torch.export logs at ERROR level before it raises); what fails is
    reported as one ExportError, and a failed dynamo export is no failure when the fallback
    succeeds."""
    before = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(before)


def made_opset(proto: object) -> int | None:
    """The default-domain opset a ModelProto imports."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def check_known_opset(opset: int | None) -> None:
    """ExportError for an opset newer than the installed onnx knows, before either exporter
    tries it (they would fail each in its own words)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is not None and opset > newest:
        raise ExportError(f"--opset {opset}: the newest this onnx knows is {newest}")


def check_opset(proto: object, opset: int | None) -> None:
    """ExportError unless the graph has the opset asked for (None: any)."""
    import onnx

    made = made_opset(proto)
    if opset is None or made == opset:
        return
    # the dynamo exporter logs a warning and keeps its own opset when it cannot convert; how
    # low it can go depends on the network's operators (resnet_reference: 16 with torch 2.14)
    raise ExportError(
        f"--opset {opset}: the exporter cannot convert this network to it (it made opset "
        f"{made}); choose a higher one, up to {onnx.defs.onnx_opset_version()}"
    )
