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
    "TrainConfig": "cifarnet.config.settings",
    "resolve_config": "cifarnet.config.settings",
    "CifarnetError": "cifarnet.errors",
    "create_model": "cifarnet.models",
    "list_models": "cifarnet.models",
    "load_dataset": "cifarnet.data.datasets",
    "train": "cifarnet.training.trainer",
    "evaluate": "cifarnet.tasks.evaluation",
    "predict": "cifarnet.tasks.prediction",
    "export": "cifarnet.tasks.exporting",
    "benchmark": "cifarnet.tasks.benchmarking",
    "compare": "cifarnet.tasks.compare",
    "train_seeds": "cifarnet.tasks.repeat",
}

__all__ = [
    "CifarnetError",
    "TrainConfig",
    "__version__",
    "benchmark",
    "compare",
    "create_model",
    "evaluate",
    "export",
    "list_models",
    "load_dataset",
    "predict",
    "resolve_config",
    "train",
    "train_seeds",
]

if TYPE_CHECKING:
    from cifarnet.config.settings import TrainConfig, resolve_config
    from cifarnet.data.datasets import load_dataset
    from cifarnet.errors import CifarnetError
    from cifarnet.models import create_model, list_models
    from cifarnet.tasks.benchmarking import benchmark
    from cifarnet.tasks.compare import compare
    from cifarnet.tasks.evaluation import evaluate
    from cifarnet.tasks.exporting import export
    from cifarnet.tasks.prediction import predict
    from cifarnet.tasks.repeat import train_seeds
    from cifarnet.training.trainer import train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'cifarnet' has no attribute {name!r}")
