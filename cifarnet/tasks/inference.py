"""One inference model over two back ends: a cifarnet checkpoint (PyTorch) or an exported .onnx
file (onnxruntime), with one input contract.

The contract, shared by the PyTorch wrapper and every export: float32 RGB images, NCHW
(N, 3, 32, 32), values in [0, 1] (uint8 pixels / 255). The normalisation with the dataset's
mean and std happens inside the model. `LoadedModel.input` is the one place that turns uint8
images into that input.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarnet.data.augment import Normalize
from cifarnet.data.datasets import get_spec, locate
from cifarnet.errors import CheckpointError, CifarnetError, ConfigError, one_line
from cifarnet.io.checkpoint import SavedRun, find_latest_checkpoint, load_checkpoint, load_model
from cifarnet.io.metadata import check_model_info
from cifarnet.io.run_folder import run_data_source
from cifarnet.runtime.device import Runtime, resolve_runtime
from cifarnet.tasks.fusion import fuse_convolutions

INPUT_CONTRACT = (
    "input 'images': float32 (N, 3, 32, 32), RGB, channels first, values in [0, 1] "
    "(uint8 pixels / 255); the model normalises with the stored mean and std itself. "
    "output 'logits': float32 (N, classes); softmax gives class probabilities."
)
INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_INSTALL_HINT = "pip install 'cifarnet[onnx]'"
MAX_METADATA_CHARS = 1 << 20  # cifarnet's own metadata is a few KiB


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint or an export knows about its model and data: class names, the
    normalisation, and the run's split settings (for `evaluate --split val`)."""

    dataset: str
    classes: list[str]
    superclasses: list[str] | None
    fine_to_coarse: list[int] | None
    mean: list[float]
    std: list[float]
    model: dict[str, Any]
    image_size: int = 32
    val_size: int | None = None
    seed: int | None = None
    subset: int | None = None  # the run trained on a class-balanced subset of this size
    train_fingerprint: str | None = None  # data.train_fingerprint of the run's training data
    data_dir: str | None = field(default=None, compare=False)  # where the run found its data

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        """Everything except the local data folder, for export metadata."""
        values = asdict(self)
        values.pop("data_dir")
        return json.dumps(values)

    def same_as(self, other: ModelInfo) -> bool:
        """Equal as stored in an export (JSON turns tuples into lists)."""
        return json.loads(self.to_json()) == json.loads(other.to_json())

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], source: str = "checkpoint") -> ModelInfo:
        try:
            info = cls._from_checkpoint(ckpt)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(
                f"{source}: its data info is malformed ({one_line(exc)})"
            ) from None
        check_model_info(info, source)
        return info

    @classmethod
    def _from_checkpoint(cls, ckpt: dict[str, Any]) -> ModelInfo:
        saved = SavedRun(ckpt)
        data, train = saved.data, saved.train_config_or_empty
        return cls(
            dataset=data["dataset"],
            classes=_listed(data["classes"]),
            superclasses=data.get("superclasses"),
            fine_to_coarse=data.get("fine_to_coarse"),
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            model=dict(saved.model) if isinstance(saved.model, dict) else saved.model,
            image_size=int(data.get("image_size", 32)),
            val_size=train.get("val_size"),
            seed=train.get("seed"),
            subset=train.get("subset"),
            train_fingerprint=data.get("train_fingerprint"),
            data_dir=train.get("data_dir") or data.get("source"),
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelInfo:
        if len(text) > MAX_METADATA_CHARS:
            raise CheckpointError(
                f"{source}: its cifarnet metadata is {len(text):,} characters, far more than "
                "cifarnet writes; refused"
            )
        try:
            info = cls(**json.loads(text))
        except (TypeError, ValueError, RecursionError) as exc:
            raise CheckpointError(
                f"{source}: its cifarnet metadata is malformed ({one_line(exc)})"
            ) from None
        check_model_info(info, source)
        return info


def _listed(value: Any) -> Any:
    """A tuple as a list; anything else (a string is no list of names) as it is, for the
    checks to refuse."""
    return list(value) if isinstance(value, tuple) else value


class NormalizedModel(nn.Module):
    """The network behind the input contract: [0, 1] RGB in, logits out. This module is what
    gets exported, so the normalisation travels inside every exported graph."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """For inference: `model` (in eval mode) with every BatchNorm2d that directly follows a
    Conv2d folded into that convolution's weight and bias. The same function up to rounding,
    one pass over each activation less (about 10% faster on a CPU). Found by tracing the
    graph with torch.fx, convolutions kept whole; a model that cannot be traced is returned
    as it is."""
    import torch.fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    class ConvLeafTracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
            return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualified_name)

    model.eval()
    try:
        graph = ConvLeafTracer().trace(model)
    except Exception:  # data-dependent control flow and the like: fx cannot follow it
        return model
    traced = torch.fx.GraphModule(model, graph)
    modules = dict(traced.named_modules())
    for node in list(graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if not (
            isinstance(bn, nn.BatchNorm2d)
            and bn.track_running_stats
            and isinstance(source, torch.fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), nn.Conv2d)
            and len(source.users) == 1  # the conv's output feeds nothing but this BN
        ):
            continue
        parent, _, name = str(source.target).rpartition(".")
        fused = fuse_conv_bn_eval(modules[source.target], bn)
        setattr(traced.get_submodule(parent), name, fused)
        node.replace_all_uses_with(source)
        graph.erase_node(node)
    graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced


def prepare_for_inference(
    model: nn.Module, runtime: Runtime, image_size: int, fuse: bool = True
) -> nn.Module:
    """`model` as evaluate, predict and benchmark run it: in eval mode, BatchNorm folded, on the
    runtime's device and memory format and, with `fuse` on a CPU in fp32 or bf16, with its
    convolutions fused with the ReLU or residual addition after them (cifarnet.tasks.fusion)."""
    module = fold_batchnorm(model)
    module.to(runtime.device, memory_format=runtime.memory_format()).eval()
    if not fuse or runtime.device.type != "cpu" or runtime.precision not in ("fp32", "bf16"):
        return module
    dtype = torch.bfloat16 if runtime.precision == "bf16" else torch.float32
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, image_size, image_size, generator=generator)
    example = example.contiguous(memory_format=runtime.memory_format())
    return fuse_convolutions(module, dtype, example)  # type: ignore[arg-type]


def contract_input(device: torch.device, channels_last: bool = False) -> Normalize:
    """The one conversion of uint8 images (N, 3, H, W) into model input: float in [0, 1]
    (x / 255, as the data layer's Normalize with mean 0 and std 1)."""
    return Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), device, channels_last)


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CifarnetError(f"onnxruntime is not installed; {ONNX_INSTALL_HINT}") from None
    return onnxruntime


def onnx_session(source: str | os.PathLike | bytes) -> Any:
    """An onnxruntime CPU session for a file path or serialised model bytes."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    # as many threads as torch uses (OMP_NUM_THREADS or the core count), so that ONNX and
    # PyTorch numbers compare like with like; onnxruntime's own default may add a thread
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        model = source if isinstance(source, bytes) else str(source)
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors (Fail, InvalidGraph)
        name = "the ONNX model" if isinstance(source, bytes) else str(source)
        raise CheckpointError(f"{name} is not a loadable ONNX model ({one_line(exc)})") from None


class OnnxModule(nn.Module):
    """An onnxruntime session that behaves like an eval-mode nn.Module on CPU tensors, so the
    evaluation loop runs it like any network."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        (logits,) = self.session.run(None, {self.input_name: array})
        return torch.from_numpy(logits)


def onnx_info(session: Any, source: str) -> ModelInfo:
    metadata = session.get_modelmeta().custom_metadata_map
    if "cifarnet" not in metadata:
        raise CheckpointError(
            f"{source} was not exported by cifarnet (no 'cifarnet' metadata); "
            "export it with `cifarnet export --onnx`"
        )
    return ModelInfo.from_json(metadata["cifarnet"], source)


@dataclass
class LoadedModel:
    """A model ready for inference: `module` maps contract input to logits on `runtime`."""

    module: nn.Module
    info: ModelInfo
    runtime: Runtime
    path: Path
    kind: str  # "checkpoint" or "onnx"
    defaulted: bool  # True when no path was given and the newest run's best.pt was taken

    @property
    def input(self) -> Normalize:
        """uint8 (N, 3, H, W) -> float [0, 1] on the model's device and memory format."""
        return contract_input(self.runtime.device, self.runtime.channels_last)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> float32 logits (N, classes) on the CPU."""
        x = self.input(images.to(self.runtime.device))
        with self.runtime.autocast():
            return self.module(x).float().cpu()


def check_finite(outputs: torch.Tensor, source: str | os.PathLike) -> torch.Tensor:
    """`outputs` (logits or probabilities) when every value is finite; else CheckpointError
    naming `source`: NaN or infinite outputs come from NaN or infinite weights, or a zero std,
    and would be reported as "nan%" predictions or accuracies."""
    if not bool(torch.isfinite(outputs).all()):
        raise CheckpointError(
            f"{source}: the model's outputs are NaN or infinite (its weights or normalisation "
            "hold NaN, infinite or zero values); nothing was reported or written"
        )
    return outputs


def resolve_model_path(path: str | os.PathLike | None) -> tuple[Path, bool]:
    """(path, defaulted): the given path (a run folder stands for its best.pt), or the newest
    runs/*/best.pt under the current folder."""
    if path is None:
        return find_latest_checkpoint(), True
    path = Path(path)
    if path.is_dir() and (path / "best.pt").is_file():
        return path / "best.pt", False
    return path, False


def load_inference_model(
    path: str | os.PathLike | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> LoadedModel:
    """A checkpoint (best.pt / last.pt of any run) or an exported .onnx file, ready to run."""
    resolved, defaulted = resolve_model_path(path)
    if resolved.suffix.lower() == ".onnx":
        if device not in ("auto", "cpu") or precision not in ("auto", "fp32"):
            raise ConfigError(
                f"{resolved}: ONNX models run in fp32 on the CPU through onnxruntime; "
                "leave --device and --precision unset (or use cpu / fp32)"
            )
        if not resolved.is_file():
            raise CheckpointError(f"{resolved}: no such ONNX file")
        session = onnx_session(resolved)
        runtime = Runtime(torch.device("cpu"), "fp32", channels_last=False)
        info = onnx_info(session, str(resolved))
        info = replace(info, data_dir=run_data_source(resolved.parent, info.dataset))
        return LoadedModel(OnnxModule(session), info, runtime, resolved, "onnx", defaulted)
    ckpt = load_checkpoint(resolved)
    info = ModelInfo.from_checkpoint(ckpt, str(resolved))
    runtime = resolve_runtime(device, precision)
    network = NormalizedModel(load_model(ckpt, resolved), info.mean, info.std)
    module = prepare_for_inference(network, runtime, info.image_size)
    return LoadedModel(module, info, runtime, resolved, "checkpoint", defaulted)


def find_data_dir(info: ModelInfo, data_dir: str | os.PathLike | None) -> str | os.PathLike | None:
    """--data-dir; else the usual places; else, when they lack the data, the folder the run
    trained from (so `evaluate runs/x/best.pt` needs no --data-dir after `train --data-dir`)."""
    if data_dir is not None:
        return data_dir
    spec = get_spec(info.dataset)
    if locate(spec, None) is None and info.data_dir and locate(spec, info.data_dir) is not None:
        return info.data_dir
    return None
