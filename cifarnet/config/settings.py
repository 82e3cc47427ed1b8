"""Training configuration: one frozen dataclass, named recipes, and the merge rules.

Values come from three layers, later ones winning: the recipe's values, a JSON config file
(`--config`), then the flags the user actually typed. A flag left unset never overrides a
config-file value. The resolved config is written to the run's config.json, which is itself a
valid `--config` file.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.errors import ConfigError, unknown_name

DATASETS = ("cifar100", "cifar10")
IMAGE_SIZE = 32  # CIFAR images are 32x32
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("plateau", "cosine", "linear")

# Each recipe sets the values that define it; everything else keeps the TrainConfig default.
RECIPES: dict[str, dict[str, Any]] = {
    # The write-up exactly: SGD lr 0.01, momentum 0.9, weight decay 1e-5, batch 256, lr / 10 when
    # validation error plateaus (torch's ReduceLROnPlateau defaults: patience 10 epochs), random
    # crop (4 px zero padding) + horizontal flip, nothing else.
    "reference": dict(
        model="resnet_reference",
        epochs=70,
        batch_size=256,
        lr=0.01,
        momentum=0.9,
        nesterov=False,
        weight_decay=1e-5,
        decay_norm_and_bias=True,
        label_smoothing=0.0,
        schedule="plateau",
        warmup_epochs=0.0,
        zero_init_residual=False,
        ema_decay=0.0,
        cutout=0,
        mixup=0.0,
        cutmix=0.0,
    ),
    # Our default on the same network: batch 128 (twice the steps per epoch), a 10x higher peak lr
    # reached by linear warm-up, cosine decay to zero, Nesterov momentum, weight decay 5e-4 (not
    # on BatchNorm or biases), label smoothing 0.1, and each residual block starting as its
    # shortcut (zero-initialised last BatchNorm scale). Without that last change the write-up's
    # network (no ReLU after the addition) blew up in its first steps at lr 0.1-0.2 (training loss
    # above chance after epoch 1); with it, lr 0.2 trains stably too.
    "default": dict(
        model="resnet_reference",
        epochs=70,
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        label_smoothing=0.1,
        schedule="cosine",
        warmup_epochs=2.0,
        zero_init_residual=True,
        ema_decay=0.0,
        cutout=0,
        mixup=0.0,
        cutmix=0.0,
    ),
    # Time-to-accuracy, after airbench's hyper-parameters (translated from its summed loss to a
    # mean loss): the wide, shallow FastNet with a whitened stem, batch 1024, Nesterov SGD at a
    # high lr (BatchNorm shifts 64x higher), warm-up over the first 20% then linear decay,
    # label smoothing 0.2, 2-px translations + flips, progressive resizing from 24 px (a 24-px
    # step costs 44% of a 32-px one).
    "fast": dict(
        model="fastnet",
        epochs=10,
        batch_size=1024,
        lr=1.5,
        momentum=0.85,
        nesterov=True,
        weight_decay=1.3e-3,
        bias_lr_scale=64.0,
        label_smoothing=0.2,
        schedule="linear",
        warmup_epochs=2.0,
        zero_init_residual=False,
        ema_decay=0.0,
        crop_padding=2,
        cutout=0,
        mixup=0.0,
        cutmix=0.0,
        resize_from=24,
    ),
}

RECIPE_HELP = {
    "reference": "the write-up's recipe exactly (SGD 0.01, wd 1e-5, lr/10 on plateau)",
    "default": "batch 128, warm-up + cosine, lr 0.1, Nesterov, wd 5e-4, label smoothing 0.1, "
    "zero-init residuals",
    "fast": "FastNet, batch 1024, lr 1.5, linear decay, label smoothing 0.2: for --time",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Validated on construction.

    The field defaults are the `default` recipe's values; `recipe` names the recipe the values
    came from. Start from another recipe with `TrainConfig.from_recipe("fast", epochs=3)` (or
    `resolve_config`): `TrainConfig(recipe="fast")` alone would hold the default recipe's
    values under the fast recipe's name, and is refused.
    """

    recipe: str = "default"
    dataset: str = "cifar100"
    data_dir: str | None = None
    model: str = "resnet_reference"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 70
    time_minutes: float | None = None
    batch_size: int = 128
    eval_batch_size: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # True: weight decay on BatchNorm and bias parameters too, as `SGD(model.parameters(), ...)`
    # does in the write-up; False: 1-d parameters are exempt (the usual modern choice).
    decay_norm_and_bias: bool = False
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: float = 2.0
    zero_init_residual: bool = True
    plateau_patience: int = 10
    ema_decay: float = 0.0
    bias_lr_scale: float = 1.0
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp's blend ratio; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix's kept share; 0 = off
    resize_from: int = 32
    val_size: int = 5000
    subset: int | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool | None = None
    deterministic: bool = False
    seed: int = 0
    runs_dir: str = "runs"
    name: str | None = None
    download: bool = True

    def __post_init__(self) -> None:
        _check_types(self)
        if self.recipe not in RECIPES:
            raise unknown_name("recipe", self.recipe, tuple(RECIPES))
        if not _FROM_VALUES.get():
            _check_recipe_applied(self)
        if self.dataset not in DATASETS:
            raise unknown_name("dataset", self.dataset, DATASETS)
        if self.precision not in PRECISIONS:
            raise unknown_name("precision", self.precision, PRECISIONS)
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        check_device(self.device)
        for name in ("epochs", "batch_size", "eval_batch_size", "plateau_patience"):
            value = getattr(self, name)
            if not _integer(value) or value <= 0:
                raise ConfigError(f"{flag_name(name)} must be a positive integer, got {value!r}")
        if not _positive_number(self.lr):
            raise ConfigError(f"--lr must be a positive number, got {self.lr!r}")
        if self.time_minutes is not None and not _positive_number(self.time_minutes):
            raise ConfigError(
                f"--time must be a positive number of minutes, got {self.time_minutes!r}"
            )
        for name in ("momentum", "label_smoothing", "ema_decay"):
            value = getattr(self, name)
            if not (_number(value) and 0.0 <= value < 1.0):
                raise ConfigError(f"{flag_name(name)} must be in [0, 1), got {value!r}")
        for name in ("weight_decay", "warmup_epochs", "bias_lr_scale", "mixup", "cutmix"):
            value = getattr(self, name)
            if not (_number(value) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{flag_name(name)} must be >= 0, got {value!r}")
        if not _integer(self.resize_from) or not 16 <= self.resize_from <= IMAGE_SIZE:
            raise ConfigError(
                f"--resize-from must be an integer in 16..32, got {self.resize_from!r}"
            )
        for name in ("val_size", "crop_padding", "cutout"):
            value = getattr(self, name)
            if not _integer(value) or value < 0:
                raise ConfigError(f"{flag_name(name)} must be an integer >= 0, got {value!r}")
        if self.cutout > IMAGE_SIZE:
            raise ConfigError(
                f"--cutout must be at most {IMAGE_SIZE} (the image side), got {self.cutout}"
            )
        if self.name is not None and (
            self.name in ("", ".", "..") or "/" in self.name or "\\" in self.name
        ):
            raise ConfigError(
                f"--name must be a plain folder name (no path separators), got {self.name!r}; "
                "use --runs-dir to choose where runs go"
            )
        if self.subset is not None and (not _integer(self.subset) or self.subset <= 0):
            raise ConfigError(f"--subset must be a positive integer, got {self.subset!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError("model_kwargs must be a JSON object")

    @classmethod
    def from_recipe(cls, recipe: str = "default", **settings: Any) -> TrainConfig:
        """The recipe's values, then `settings` (field names) on top."""
        if not isinstance(recipe, str):
            raise ConfigError(f"recipe must be a string, got {recipe!r}")
        return resolve_config({**settings, "recipe": recipe}, source="TrainConfig.from_recipe")

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON-ready values (what config.json and checkpoints hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """A validated config from plain values; unknown keys (other than `_`-prefixed
        metadata) raise ConfigError naming `source`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in known and not k.startswith("_"))
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known))}"
            )
        with _values_as_given():
            return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied, validated again."""
        with _values_as_given():  # changes to a config already built: not a new label
            return dataclasses.replace(self, **changes)


# Checked before the values themselves, so that a config file's "seed": "x" or "recipe": 5 is
# one clear error rather than a TypeError deep inside torch or difflib.
_STR_FIELDS = ("recipe", "dataset", "model", "device", "precision", "schedule", "runs_dir")
_OPTIONAL_STR_FIELDS = ("data_dir", "name")
_BOOL_FIELDS = (
    "nesterov",
    "decay_norm_and_bias",
    "zero_init_residual",
    "flip",
    "deterministic",
    "download",
)


def _check_types(config: TrainConfig) -> None:
    for name in _STR_FIELDS + _OPTIONAL_STR_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, str) and not (value is None and name in _OPTIONAL_STR_FIELDS):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    for name in (*_BOOL_FIELDS, "compile"):
        value = getattr(config, name)
        if not isinstance(value, bool) and not (value is None and name == "compile"):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    if not _integer(config.seed):
        raise ConfigError(f"seed must be an integer, got {config.seed!r}")


# Set while from_dict builds a config from complete values (the recipe merged with a config file
# and flags, or a run's saved config): there the values are what the user chose, whatever the
# recipe label; only a TrainConfig(...) written by hand is checked against its label.
_FROM_VALUES: contextvars.ContextVar[bool] = contextvars.ContextVar("_FROM_VALUES", default=False)


@contextlib.contextmanager
def _values_as_given() -> Iterator[None]:
    """Configs built inside skip the recipe-label check (see _FROM_VALUES)."""
    token = _FROM_VALUES.set(True)
    try:
        yield
    finally:
        _FROM_VALUES.reset(token)


def _check_recipe_applied(config: TrainConfig) -> None:
    """Refuse a config labelled with a recipe none of whose own settings it holds: the mark of
    `TrainConfig(recipe=...)` built without the recipe's values."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    own = {k: v for k, v in RECIPES[config.recipe].items() if v != defaults.get(k)}
    if own and all(getattr(config, k) == defaults[k] for k in own):
        raise ConfigError(
            f"this config is labelled recipe {config.recipe!r} but holds none of its settings "
            f"(e.g. {next(iter(own))}={next(iter(own.values()))!r}); build it with "
            f"TrainConfig.from_recipe({config.recipe!r}, ...)"
        )


def resolve_config(
    flags: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    source: str = "flags",
    *,
    check_model: bool = True,
) -> TrainConfig:
    """Recipe values < config-file values < explicitly given flags (None means 'not given').
    `check_model`: build the network once when the file sets its `model_kwargs`, so that kwargs
    it does not accept are refused as the file's (off for a resumed run: its network is the
    checkpoint's)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    file_values = read_config_file(config_file) if config_file is not None else {}
    recipe = flags.get("recipe", file_values.get("recipe", "default"))
    origin = f"{config_file}: " if "recipe" not in flags and "recipe" in file_values else ""
    if not isinstance(recipe, str):
        raise ConfigError(f"{origin}recipe must be a string, got {recipe!r}")
    if recipe not in RECIPES:
        raise ConfigError(f"{origin}{unknown_name('recipe', recipe, tuple(RECIPES))}")
    if file_values:
        # a bad value in the file is named as the file's, not as a flag the user never typed
        try:
            TrainConfig.from_dict({**RECIPES[recipe], **file_values, "recipe": recipe})
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(
                message if message.startswith(str(config_file)) else f"{config_file}: {message}"
            ) from None
    merged = {**RECIPES[recipe], **file_values, **flags, "recipe": recipe}
    config = TrainConfig.from_dict(merged, source=str(config_file or source))
    if check_model and "model_kwargs" in file_values and "model_kwargs" not in flags:
        try:
            _build_once(config)  # the model named anywhere, with the file's kwargs
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    return config


def _build_once(config: TrainConfig) -> None:
    """Build the configured network: its own check of `model_kwargs` is the only complete one."""
    from cifarnet.data.datasets import get_spec
    from cifarnet.models import create_model

    create_model(config.model, get_spec(config.dataset).num_classes, **config.model_kwargs)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON object of TrainConfig fields (a run's config.json works as is)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values


def check_device(device: str) -> None:
    """A known device name (not whether it is present: see runtime.resolve_device)."""
    base, _, index = device.partition(":")
    ok = device in ("auto", "cpu", "mps", "cuda") or (base == "cuda" and index.isdigit())
    if not ok:
        raise ConfigError(
            f"unknown device {device!r}{_device_hint(device)}; use one of: {DEVICES_HELP}"
        )


def _device_hint(device: str) -> str:
    from cifarnet.errors import did_you_mean

    return did_you_mean(device, ("auto", "cpu", "cuda", "mps"))


def _integer(value: Any) -> bool:
    """An int, and not a bool (which Python counts as one): `"val_size": true` is a mistake."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value > 0


# Settings whose flag is not --<name>, and settings without a flag (set in a --config file).
_FLAGS = {"ema_decay": "--ema", "time_minutes": "--time"}
_FILE_ONLY = (
    "eval_batch_size",
    "plateau_patience",
    "bias_lr_scale",
    "crop_padding",
    "model_kwargs",
)


def flag_name(name: str) -> str:
    """How the user sets `name`: its flag, or the config file's key."""
    if name in _FILE_ONLY:
        return f"{name} (config file)"
    return _FLAGS.get(name, "--" + name.replace("_", "-"))
