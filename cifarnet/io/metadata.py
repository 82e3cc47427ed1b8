"""Checks of the metadata a checkpoint or an ONNX export carries, made when it is loaded: a
crafted or damaged file is refused in one line naming it, before its class count sizes any
allocation or its class names reach a table.

`check_model_info(info, source)` checks a ModelInfo; `check_model_config(model, source)` the
{"name", "num_classes", "kwargs"} that rebuilds the network.
"""

from __future__ import annotations

import math
from typing import Any

from cifarnet.errors import CheckpointError

MAX_CLASSES = 10_000  # CIFAR has 10 or 100; a class count beyond this is no real model's
MAX_NAME_LENGTH = 200  # characters of one class or superclass name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and len(v) <= MAX_NAME_LENGTH for v in value
    )


def _count(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= MAX_CLASSES


def check_model_config(model: Any, source: str) -> None:
    """The network's description: a dict with a model name and a plausible class count."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise CheckpointError(f"{source}: its model entry is malformed (no model name)")
    if not _count(model.get("num_classes")):
        raise CheckpointError(
            f"{source}: its model has {model.get('num_classes')!r} classes; expected a whole "
            f"number in 1..{MAX_CLASSES}"
        )
    if not isinstance(model.get("kwargs", {}), dict):
        raise CheckpointError(f"{source}: its model kwargs are not a mapping")


def check_model_info(info: Any, source: str) -> None:
    """Class lists of the right length and type, the fine-to-coarse map in range, a finite
    normalisation with std > 0, and the model's class count equal to the class list's."""
    if not isinstance(info.dataset, str):
        raise CheckpointError(f"{source}: its dataset name is not a string")
    if not _names(info.classes) or not _count(len(info.classes)):
        raise CheckpointError(
            f"{source}: its class names are not a list of 1..{MAX_CLASSES} strings "
            f"of at most {MAX_NAME_LENGTH} characters"
        )
    check_model_config(info.model, source)
    if info.model["num_classes"] != len(info.classes):
        raise CheckpointError(
            f"{source}: its model has {info.model['num_classes']} classes but it names "
            f"{len(info.classes)}"
        )
    _check_superclasses(info, source)
    _check_normalisation(info, source)
    for name in ("image_size",):
        value = getattr(info, name)
        if not (_is_int(value) and 1 <= value <= 4096):
            raise CheckpointError(f"{source}: its {name} {value!r} is not a plausible image side")
    for name in ("val_size", "seed", "subset"):
        value = getattr(info, name)
        if value is not None and not _is_int(value):
            raise CheckpointError(f"{source}: its {name} {value!r} is not a whole number")


def _check_superclasses(info: Any, source: str) -> None:
    supers, mapping = info.superclasses, info.fine_to_coarse
    if supers is None and mapping is None:
        return
    if supers is None or mapping is None:
        raise CheckpointError(f"{source}: it has superclass names or their map, not both")
    if not _names(supers) or not _count(len(supers)):
        raise CheckpointError(f"{source}: its superclass names are not a list of strings")
    if not isinstance(mapping, list) or len(mapping) != len(info.classes):
        raise CheckpointError(
            f"{source}: its fine-to-coarse map does not list one superclass per class "
            f"({len(info.classes)})"
        )
    if not all(_is_int(c) and 0 <= c < len(supers) for c in mapping):
        raise CheckpointError(
            f"{source}: its fine-to-coarse map holds superclass numbers outside "
            f"0..{len(supers) - 1}"
        )


def _check_normalisation(info: Any, source: str) -> None:
    for name in ("mean", "std"):
        values = getattr(info, name)
        if not (
            isinstance(values, list)
            and len(values) == 3
            and all(_is_number(v) and math.isfinite(v) for v in values)
        ):
            raise CheckpointError(f"{source}: its normalisation {name} is not 3 finite numbers")
    if not all(v > 0 for v in info.std):
        raise CheckpointError(
            f"{source}: its normalisation std {info.std} has a value <= 0 (a division by it "
            "gives infinite or NaN outputs)"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
