"""Model registry: `create_model(name, num_classes, **kwargs)` and `list_models()`.

A model is rebuilt from its config alone: {"name", "num_classes", "kwargs"} is what checkpoints
store, and `build_model(config)` turns it back into the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from cifarnet.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator: add a builder `fn(num_classes, **kwargs) -> nn.Module` to the registry."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = ModelEntry(name, fn, description)
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def model_description(name: str) -> str:
    return _entry(name).description


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise unknown_name("model", name, list_models())
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 100, **kwargs: Any) -> nn.Module:
    """A freshly initialised model of the registered family `name`."""
    entry = _entry(name)
    try:
        return entry.builder(num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r} does not accept {kwargs}: {exc}") from None


def model_config(name: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> dict:
    """What a checkpoint stores to rebuild the network (see `build_model`)."""
    return {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs or {})}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Inverse of model_config: the network described by a checkpoint's model config."""
    return create_model(config["name"], config["num_classes"], **config.get("kwargs", {}))


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


# Importing the families registers them.
from cifarnet.models import (  # noqa: E402, F401
    densenet,
    fastnet,
    mobilenetv2,
    preact_resnet,
    resnet,
    resnet_bottleneck,
    resnet_cifar,
    vit,
    wide_resnet,
)
