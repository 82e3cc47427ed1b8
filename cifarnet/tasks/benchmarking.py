"""`benchmark`: training and inference throughput of a model on this machine, for each runtime
and precision that applies. Synthetic input; every row warms up before it is timed.

Rows: eager fp32; eager with reduced-precision autocast (bf16, fp16 on GPUs without bf16) where
the hardware computes it natively; torch.compile'd (optional: slow to compile on a CPU); ONNX
Runtime (inference, CPU, fp32). All rows run the exported form of the model (`NormalizedModel`:
[0, 1] input, normalisation inside); the PyTorch inference rows run it as evaluate and predict
do, with BatchNorm folded into the convolutions (and, eager on a CPU, each convolution fused
with the ReLU or residual addition after it). The PyTorch rows use the memory layout a run on
the device would (channels_last on CUDA and CPUs, contiguous on MPS).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cifarnet.data.datasets import get_spec
from cifarnet.errors import CheckpointError, ConfigError
from cifarnet.io.checkpoint import find_latest_checkpoint, load_checkpoint, load_model
from cifarnet.io.tables import check_csv_name, check_new_files, write_csv
from cifarnet.models import count_parameters, create_model, model_config
from cifarnet.runtime.device import (
    Runtime,
    cpu_has_native_bf16,
    out_of_memory_as,
    prefers_channels_last,
    resolve_device,
)
from cifarnet.tasks.inference import (
    INPUT_NAME,
    ModelInfo,
    NormalizedModel,
    prepare_for_inference,
    resolve_model_path,
)
from cifarnet.training.step import train_step

DEFAULT_MODEL = "resnet_reference"
COLUMNS = [
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


@dataclass
class BenchmarkRow:
    mode: str  # "train" (forward + backward + SGD step) or "inference"
    runtime: str  # "eager", "compiled" or "onnxruntime"
    precision: str
    channels_last: bool
    device: str
    batch_size: int
    images_per_second: float
    ms_per_batch: float
    batches: int  # timed batches (after warm-up)


@dataclass
class Benchmark:
    source: str  # the checkpoint, or "model <name>" for a freshly initialised one
    defaulted: bool  # the checkpoint was picked as the newest run's best.pt
    model: str
    parameters: int
    rows: list[BenchmarkRow]
    skipped: list[str]  # one line per configuration that does not apply here

    def save(self, out: str | os.PathLike, force: bool = False) -> None:
        check_new_files([out], force)
        write_csv([asdict(r) for r in self.rows], out, COLUMNS)


MAX_BATCH_SIZE = 2**31 - 1  # what torch sizes take; a batch too big for memory is an OOM line
MAX_SECONDS = 3600


def default_batch_size(device: torch.device) -> int:
    """benchmark's batch size when none is given: 256, and 1024 on a GPU."""
    return 256 if device.type == "cpu" else 1024


def _batch_size(batch_size: int | None, device: str) -> int:
    """The batch size given (checked), or the device's default."""
    if batch_size is None:
        return default_batch_size(resolve_device(device))
    if not isinstance(batch_size, int) or not 0 < batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            f"--batch-size must be an integer in 1..{MAX_BATCH_SIZE}, got {batch_size!r}"
        )
    return batch_size


def benchmark(
    checkpoint: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    seconds: float = 3.0,
    compile: bool = False,
    train: bool = True,
    onnx: bool = True,
    out: str | os.PathLike | None = None,
    force: bool = False,
    status: Callable[[str], None] | None = None,
) -> Benchmark:
    """Images per second for training and inference, per runtime and precision.

    The network: `checkpoint`, else a fresh `model` (registry name), else the newest
    runs/*/best.pt, else a fresh resnet_reference (weights do not change the speed).
    `seconds`: the least timed run per row, after its warm-up (a row takes longer: its
    warm-up, compiling included, can take minutes on a slow CPU). `status(line)` is told of
    each row as it starts. `batch_size`: default 256, 1024 on a
    GPU (256 leaves a large GPU mostly idle).
    """
    status = status or (lambda line: None)
    if checkpoint is not None and model is not None:
        raise ConfigError("give a checkpoint or --model, not both")
    batch_size = _batch_size(batch_size, device)
    if not (isinstance(seconds, (int, float)) and 0 < seconds <= MAX_SECONDS):
        raise ConfigError(
            f"--seconds must be a positive number up to {MAX_SECONDS} (an hour per row), "
            f"got {seconds!r}"
        )
    if out is not None:
        check_csv_name(out, "bench.csv")
        check_new_files([out], force)
    net, info, source, defaulted = _network(checkpoint, model)
    dev = resolve_device(device)
    rows: list[BenchmarkRow] = []
    skipped: list[str] = []
    channels_last = prefers_channels_last(dev)
    runtimes = [Runtime(dev, "fp32", channels_last)]
    reduced = _reduced_precision(dev)
    if reduced is None:
        skipped.append(f"bf16: {dev.type} has no native bf16; emulated bf16 is slower than fp32")
    else:
        runtimes.append(Runtime(dev, reduced, channels_last))
    modes = ("train", "inference") if train else ("inference",)
    base = NormalizedModel(net, info.mean, info.std)
    for compiled in (False, True) if compile else (False,):
        # compile is slow to warm up: only at the fastest precision available
        for rt in runtimes[-1:] if compiled else runtimes:
            for mode in modes:
                with out_of_memory_as(
                    f"out of memory on {dev} at batch size {batch_size} ({mode}, "
                    f"{rt.precision}); try a smaller --batch-size"
                ):
                    status(_row_name(mode, "compiled" if compiled else "eager", rt.precision))
                    rows.append(_time_torch(base, rt, mode, batch_size, seconds, compiled, info))
    if onnx:
        status(_row_name("inference", "onnxruntime", "fp32"))
        row = _time_onnx(base, info, batch_size, seconds, skipped)
        if row is not None:
            rows.append(row)
    result = Benchmark(source, defaulted, info.model["name"], count_parameters(net), rows, skipped)
    if out is not None:
        result.save(out, force)
    return result


def _row_name(mode: str, runtime: str, precision: str) -> str:
    return f"{mode}, {runtime}, {precision}: warming up, then timing"


def _network(
    checkpoint: str | os.PathLike | None, model: str | None
) -> tuple[torch.nn.Module, ModelInfo, str, bool]:
    defaulted = False
    if checkpoint is None and model is None:
        try:
            checkpoint, defaulted = find_latest_checkpoint(), True
        except CheckpointError:
            model = DEFAULT_MODEL
    if checkpoint is not None:
        checkpoint, _ = resolve_model_path(checkpoint)  # a run folder stands for its best.pt
        if str(checkpoint).lower().endswith(".onnx"):
            raise ConfigError(
                f"{checkpoint}: benchmark takes a checkpoint (.pt); it makes its ONNX row itself"
            )
        ckpt = load_checkpoint(checkpoint)
        info = ModelInfo.from_checkpoint(ckpt, str(checkpoint))
        return load_model(ckpt, checkpoint), info, str(checkpoint), defaulted
    assert model is not None
    net, info = fresh_network(model)
    return net, info, f"model {model}", False


def fresh_network(
    model: str, model_kwargs: dict[str, Any] | None = None
) -> tuple[torch.nn.Module, ModelInfo]:
    """A freshly initialised registered network for CIFAR-100 and the ModelInfo a checkpoint of
    it would carry (placeholder class names): weights do not change the speed."""
    spec = get_spec("cifar100")
    net = create_model(model, spec.num_classes, **(model_kwargs or {}))
    info = ModelInfo(
        dataset=spec.name,
        classes=[f"class_{i}" for i in range(spec.num_classes)],
        superclasses=None,
        fine_to_coarse=None,
        mean=list(spec.mean),
        std=list(spec.std),
        model=model_config(model, spec.num_classes, model_kwargs),
    )
    return net, info


def _reduced_precision(device: torch.device) -> str | None:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else None
    return "fp16"  # mps


def _time_torch(
    base: NormalizedModel,
    rt: Runtime,
    mode: str,
    batch_size: int,
    seconds: float,
    compiled: bool,
    info: ModelInfo,
) -> BenchmarkRow:
    model = copy.deepcopy(base)
    if mode == "inference":  # as evaluate and predict run it; Inductor fuses by itself
        model = prepare_for_inference(model, rt, info.image_size, fuse=not compiled)
    else:
        model.to(rt.device, memory_format=rt.memory_format())
    forward = torch.compile(model) if compiled else model
    g = torch.Generator(device=rt.device).manual_seed(0)
    shape = (batch_size, 3, info.image_size, info.image_size)
    x = torch.rand(shape, device=rt.device, generator=g)
    x = x.contiguous(memory_format=rt.memory_format())
    if mode == "train":
        y = torch.randint(0, info.num_classes, (batch_size,), device=rt.device, generator=g)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None

        def step() -> None:
            train_step(forward, x, y, optimizer, rt, scaler=scaler)
    else:
        model.eval()

        @torch.no_grad()
        def step() -> None:
            with rt.autocast():
                forward(x)

    batches, elapsed = _time(step, seconds, rt.device, warmup=3 if compiled else 2)
    return BenchmarkRow(
        mode,
        "compiled" if compiled else "eager",
        rt.precision,
        rt.channels_last,
        str(rt.device),
        batch_size,
        batches * batch_size / elapsed,
        1000.0 * elapsed / batches,
        batches,
    )


def _time_onnx(
    base: NormalizedModel, info: ModelInfo, batch_size: int, seconds: float, skipped: list[str]
) -> BenchmarkRow | None:
    from cifarnet.errors import CifarnetError
    from cifarnet.tasks.exporting import onnx_bytes
    from cifarnet.tasks.inference import onnx_session

    try:
        session = onnx_session(onnx_bytes(copy.deepcopy(base).eval(), info).data)
    except CifarnetError as exc:
        skipped.append(f"onnxruntime: {exc}")
        return None
    x = torch.rand(batch_size, 3, info.image_size, info.image_size).numpy()
    batches, elapsed = _time(
        lambda: session.run(None, {INPUT_NAME: x}), seconds, torch.device("cpu"), warmup=2
    )
    return BenchmarkRow(
        "inference",
        "onnxruntime",
        "fp32",
        False,
        "cpu",
        batch_size,
        batches * batch_size / elapsed,
        1000.0 * elapsed / batches,
        batches,
    )


def _time(
    step: Callable[[], Any], seconds: float, device: torch.device, warmup: int
) -> tuple[int, float]:
    """(batches, elapsed seconds) of `step` run for about `seconds` (at least 2 batches) after
    a warm-up of at least `warmup` calls and a quarter of `seconds` (up to 1 s): the first
    calls pay for kernel selection, allocation and compiling."""
    t0 = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - t0 < min(1.0, seconds / 4):
        step()
        done += 1
        _sync(device)
    batches, t0 = 0, time.perf_counter()
    while True:
        step()
        batches += 1
        if batches >= 2 and (batches % 4 == 0 or device.type == "cpu"):
            _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    _sync(device)
    return batches, time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
