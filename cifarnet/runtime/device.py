"""Device, precision and memory-format choices, resolved once per run."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarnet.config.settings import PRECISIONS, check_device
from cifarnet.errors import DeviceError, unknown_name
from cifarnet.runtime.allocator import keep_freed_memory_in_process


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" | "bf16" | "fp16"
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (and loss); a no-op in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve_device(spec: str) -> torch.device:
    """auto -> cuda, then mps, then cpu. An explicit accelerator that is absent is an error.
    Resolving to the CPU also applies the allocator setting of cifarnet/allocator.py, so that
    every command that computes on the CPU gets it."""
    device = _device(spec)
    if device.type == "cpu":
        keep_freed_memory_in_process()
    return device


def _device(spec: str | torch.device) -> torch.device:
    spec = str(spec)  # the Python API may pass a torch.device
    check_device(spec)  # a typo gets one clear line, not torch's device-string parser error
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {spec}: no CUDA GPU is available; use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {spec}: MPS is not available here; use --device cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast
    is about 2x faster than fp32 for convolutions; elsewhere bf16 is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and _cpuinfo_has_bf16()
    except (AttributeError, RuntimeError):
        return _cpuinfo_has_bf16()


def _cpuinfo_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(spec: str, device: torch.device) -> str:
    """Resolve "auto" to the fastest precision `device` runs well; check an explicit one."""
    if spec not in PRECISIONS:
        raise unknown_name("precision", spec, PRECISIONS)
    if spec != "auto":
        if spec == "fp16" and device.type == "cpu":
            # PyTorch has no fast fp16 convolutions on CPUs: resnet_reference's forward pass at
            # batch 256 ran 9.6 images/s under fp16 autocast against 229.6 in fp32 here
            raise DeviceError(
                "--precision fp16 is not supported on the CPU (over 20x slower than fp32); use "
                + ("bf16 (native on this CPU) or fp32" if cpu_has_native_bf16() else "fp32")
            )
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """The device, precision and memory format a run uses, from the --device and --precision
    names ("auto" picks the best this machine has)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    return Runtime(dev, prec, prefers_channels_last(dev))


def prefers_channels_last(device: torch.device) -> bool:
    """Whether convolutions on `device` run faster on channels_last (NHWC) tensors, in every
    precision: cuDNN and oneDNN pick their fastest kernels for that layout, on CPUs in fp32 too
    (benchmarks/memory_layout.py; the figures are in docs/performance.md). MPS stays
    contiguous: its channels_last support is partial."""
    return device.type in ("cuda", "cpu")


def tune_backends(runtime: Runtime, deterministic: bool = False) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per shape and keep the fastest
    (cudnn.benchmark; training uses few shapes), unless --deterministic asks for repeatable
    kernels."""
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic


def is_out_of_memory(exc: RuntimeError) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU and MPS allocators a plain RuntimeError."""
    text = str(exc)
    return (
        isinstance(exc, torch.OutOfMemoryError)
        or "can't allocate memory" in text
        or "out of memory" in text
    )


@contextlib.contextmanager
def out_of_memory_as(message: str) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into DeviceError(message), one line for
    the user; any other RuntimeError passes through."""
    try:
        yield
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        raise DeviceError(message) from None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, numpy and torch; `deterministic` also asks torch for deterministic kernels
    (warning, not failing, where an op has none), and its absence takes that back: the setting is
    global, and a run after a deterministic one in the same process must not inherit it."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=deterministic)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak resident memory of this process (CPU, MPS) or peak allocated GPU memory (CUDA), in
    MiB; None where the platform cannot tell (Windows has no `resource` module)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
