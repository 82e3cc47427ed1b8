"""cifarnet: train, evaluate, run and export residual networks on CIFAR-100 and CIFAR-10.

The public API is imported lazily so that `import cifarnet` (and `cifarnet --help`) stays fast:
torch is only loaded when a function that needs it is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "TrainConfig": "cifarnet.config",
    "resolve_config": "cifarnet.config",
    "CifarnetError": "cifarnet.errors",
    "create_model": "cifarnet.models",
    "list_models": "cifarnet.models",
    "load_dataset": "cifarnet.data",
    "train": "cifarnet.trainer",
    "evaluate": "cifarnet.evaluation",
    "predict": "cifarnet.prediction",
    "export": "cifarnet.exporter",
    "benchmark": "cifarnet.benchmarking",
}

__all__ = [
    "CifarnetError",
    "TrainConfig",
    "__version__",
    "benchmark",
    "create_model",
    "evaluate",
    "export",
    "list_models",
    "load_dataset",
    "predict",
    "resolve_config",
    "train",
]

if TYPE_CHECKING:
    from cifarnet.benchmarking import benchmark
    from cifarnet.config import TrainConfig, resolve_config
    from cifarnet.data import load_dataset
    from cifarnet.errors import CifarnetError
    from cifarnet.evaluation import evaluate
    from cifarnet.exporter import export
    from cifarnet.models import create_model, list_models
    from cifarnet.prediction import predict
    from cifarnet.trainer import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cifarnet' has no attribute {name!r}")
