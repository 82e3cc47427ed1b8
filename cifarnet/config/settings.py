"""Training configuration: one frozen dataclass, named recipes, and the merge rules.

Values come from three layers, later ones winning: the recipe's values, a JSON config file
(`--config`), then the flags the user actually typed. A flag left unset never overrides a
config-file value. The resolved config is written to the run's config.json, which is itself a
valid `--config` file.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import functools
import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.config.checks import check_combinations, check_types, check_values
from cifarnet.config.recipes import RECIPE_HELP, RECIPES
from cifarnet.errors import ConfigError, unknown_name

DATASETS = ("cifar100", "cifar10")
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("plateau", "cosine", "linear")
# the batch augmentation policies of data/policies.py (named here: the settings import no torch)
POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class Setting:
    """How a TrainConfig field is set and described; see `setting`."""

    help: str
    flag: str | None
    shown: str | bool | None
    file_only: bool


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    shown: str | bool | None = None,
    file_only: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A TrainConfig field and everything the user sees of it: `help` (the `train` option's help
    and the settings table's), `flag` (the option when not --<name>, or --<name>/--no-<name> for
    a bool), `shown` (the default `train --help` shows, when the derived one would be wrong: see
    `setting_specs`) and `file_only` (no flag: set in a --config file)."""
    meta = {"setting": Setting(help=help, flag=flag, shown=shown, file_only=file_only)}
    return field(default=default, default_factory=default_factory, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Validated on construction.

    The field defaults are the `default` recipe's values; `recipe` names the recipe the values
    came from. Start from another recipe with `TrainConfig.from_recipe("fast", epochs=3)` (or
    `resolve_config`): `TrainConfig(recipe="fast")` alone would hold the default recipe's
    values under the fast recipe's name, and is refused.

    Each field is declared once, with `setting`: the `train` command's options, `flag_name` and
    docs/settings.md are all made from these declarations.
    """

    recipe: str = setting(
        "default",
        help="; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items()) + ".",
        shown="the default recipe",
    )
    dataset: str = setting("cifar100", help=" or ".join(DATASETS) + ".")
    data_dir: str | None = setting(
        None,
        help="Folder holding cifar-100-python/ or cifar-10-batches-py/ (or the .tar.gz); "
        "default $CIFARNET_DATA, else ~/.cache/cifarnet.",
    )
    model: str = setting("resnet_reference", help="Registered model (see `cifarnet models`).")
    model_kwargs: dict[str, Any] = setting(
        help="Keyword arguments of the model's constructor, as a JSON object.",
        file_only=True,
        default_factory=dict,
    )
    epochs: int = setting(
        70, help="Epochs to train.", shown="from recipe: 70, fast and speedrun 10"
    )
    time_minutes: float | None = setting(
        None,
        help="Wall-clock training budget in minutes; the lr schedule is fitted to it, and "
        "--epochs only sets the warm-up's share (warmup_epochs / epochs).",
        flag="--time",
    )
    batch_size: int = setting(128, help="Training batch size.")
    eval_batch_size: int = setting(
        1024, help="Images per forward pass when evaluating (validation and test).", file_only=True
    )
    lr: float = setting(0.1, help="Peak learning rate.")
    momentum: float = setting(0.9, help="SGD momentum.")
    nesterov: bool = setting(True, help="Nesterov momentum.")
    weight_decay: float = setting(5e-4, help="L2 weight decay.")
    decay_norm_and_bias: bool = setting(
        False,
        help="true: weight decay on BatchNorm and bias parameters too, as "
        "`SGD(model.parameters(), ...)` does in the write-up; false: 1-d parameters are exempt "
        "(the usual modern choice).",
        file_only=True,
    )
    label_smoothing: float = setting(0.1, help="Label smoothing in [0, 1).")
    schedule: str = setting("cosine", help=f"{', '.join(SCHEDULES)}.")
    warmup_epochs: float = setting(2.0, help="Linear warm-up length in epochs.")
    zero_init_residual: bool = setting(
        True, help="Start each residual block as its shortcut (last BatchNorm scale 0)."
    )
    plateau_patience: int = setting(
        10,
        help="Epochs without a better validation error before the plateau schedule divides "
        "the lr by 10.",
        file_only=True,
    )
    ema_decay: float = setting(
        0.0, help="EMA decay of the weights used for evaluation (0 = off).", flag="--ema"
    )
    lookahead: bool = setting(
        False,
        help="Lookahead, as airbench: every 5 steps the weights restart from slow weights that "
        "follow them, more slowly toward the end.",
    )
    bias_lr_scale: float = setting(
        1.0, help="Learning-rate multiplier of BatchNorm and bias parameters.", file_only=True
    )
    crop_padding: int = setting(
        4, help="Zero padding (pixels) around the image before the random crop.", file_only=True
    )
    flip: bool = setting(True, help="Random horizontal flips.", file_only=True)
    cutout: int = setting(0, help="Cutout square size in pixels (0 = off).")
    mixup: float = setting(
        0.0,
        help="MixUp: blend each image with another, ratio ~ Beta(a, a); a = 0.2 is usual "
        "(0 = off).",
    )
    cutmix: float = setting(
        0.0,
        help="CutMix: paste a box from another image, kept share ~ Beta(a, a); a = 1.0 is "
        "usual (0 = off). With --mixup too, each batch uses one of the two.",
    )
    augment: str = setting(
        "none",
        help=f"Augmentation policy after crop and flip: {', '.join(POLICIES)} (AutoAugment's "
        "CIFAR-10 policy, RandAugment N/M, TrivialAugment wide).",
    )
    randaugment_n: int = setting(2, help="RandAugment: operations per image (1-14).")
    randaugment_m: int = setting(9, help="RandAugment: magnitude of every operation (0-30).")
    random_erasing: float = setting(
        0.0,
        help="Random erasing: the probability that an image gets a box of random pixels "
        "(0 = off; 0.25 is usual).",
    )
    resize_from: int = setting(
        32,
        help="Progressive resizing: start training at this side length (16-32 px), "
        "growing to 32 px by 75% of training.",
    )
    sam: float | None = setting(
        None,
        help="Sharpness-aware minimisation with radius RHO (0.05 is usual; ASAM about 10x "
        "larger): two forward-backward passes a step, so each step costs about twice as much.",
    )
    sam_adaptive: bool = setting(
        False,
        help="With --sam: ASAM, the neighbourhood scaled by each weight's size.",
        flag="--sam-adaptive",
    )
    patience: int | None = setting(
        None,
        help="Early stopping: end the run after N epochs without a better validation top-1 "
        "(needs a validation split).",
    )
    val_size: int = setting(
        5000, help="Validation images held out of train (stratified); 0 trains on all 50k."
    )
    subset: int | None = setting(
        None, help="Train on a class-balanced subset of N images (smoke runs)."
    )
    device: str = setting("auto", help=DEVICES_HELP + ".")
    precision: str = setting(
        "auto", help=f"{', '.join(PRECISIONS)}: auto is bf16 on CUDA and bf16-capable CPUs."
    )
    compile: bool | None = setting(None, help="torch.compile the model.", shown="on for CUDA")
    deterministic: bool = setting(
        False, help="Deterministic algorithms only.", flag="--deterministic"
    )
    seed: int = setting(0, help="Random seed.")
    runs_dir: str = setting("runs", help="Where run folders go.")
    name: str | None = setting(
        None, help="Run folder name (never overwritten: name-2, ...).", shown="train"
    )
    download: bool = setting(True, help="Download the dataset when absent.")
    tensorboard: bool = setting(
        False,
        help="Write TensorBoard event files into the run folder: the metrics.csv scalars, the "
        "lr per step, the model graph (pip install 'cifarnet[tensorboard]').",
        flag="--tensorboard",
    )
    save_every: int = setting(
        1,
        help="Write last.pt (and a new best.pt) every N epochs and at the end; a stop signal "
        "still saves. Above 1 saves time on a fast GPU; a crash redoes up to N epochs.",
    )
    backend: str = setting(
        "auto",
        help="Distributed runs (torchrun): the torch.distributed backend, auto (nccl on CUDA, "
        "gloo on the CPU), nccl or gloo.",
    )
    sync_bn: bool = setting(
        False,
        help="Distributed runs: BatchNorm statistics over the global batch (SyncBatchNorm), "
        "not over each process's share of it.",
        flag="--sync-bn",
    )
    dist_timeout: float = setting(
        60.0,
        help="Distributed runs: seconds a process waits for the others (to start, or at a "
        "collective) before it stops with an error.",
    )

    def __post_init__(self) -> None:
        check_types(self)
        if self.recipe not in RECIPES:
            raise unknown_name("recipe", self.recipe, tuple(RECIPES))
        if not _FROM_VALUES.get():
            _check_recipe_applied(self)
        for name, kind, choices in (
            ("dataset", "dataset", DATASETS),
            ("precision", "precision", PRECISIONS),
            ("schedule", "schedule", SCHEDULES),
            ("augment", "augmentation policy", POLICIES),
            ("backend", "backend", BACKENDS),
        ):
            if getattr(self, name) not in choices:
                raise unknown_name(kind, getattr(self, name), choices)
        check_device(self.device)
        check_values(self, flag_name)
        check_combinations(self, flag_name)

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
        """A copy with `changes` applied, validated again. Another `model` without new
        `model_kwargs` drops the old ones: they are arguments of the old network."""
        if changes.get("model", self.model) != self.model and "model_kwargs" not in changes:
            changes["model_kwargs"] = {}
        with _values_as_given():  # changes to a config already built: not a new label
            return dataclasses.replace(self, **changes)


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
    recipe_values = copy.deepcopy(RECIPES[recipe])  # its model_kwargs stay the recipe's own
    if file_values:
        # a bad value in the file is named as the file's, not as a flag the user never typed
        try:
            TrainConfig.from_dict(
                {**_layered(recipe_values, file_values), "recipe": recipe},
                source=str(config_file),
            )
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(
                message if message.startswith(str(config_file)) else f"{config_file}: {message}"
            ) from None
    merged = {**_layered(recipe_values, file_values, flags), "recipe": recipe}
    config = TrainConfig.from_dict(merged, source=str(config_file or source))
    if check_model and "model_kwargs" in file_values and "model_kwargs" not in flags:
        try:
            _build_once(config)  # the model named anywhere, with the file's kwargs
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    return config


def _layered(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers' values, later ones winning. `model_kwargs` set beside a `model` are that
    network's arguments, dropped where a later layer names another model (`--recipe speedrun
    --model resnet20` trains a plain resnet20 with the rest of the recipe, and `--config
    RUN/config.json --model resnet20` likewise); set alone, they are for whichever model is
    named."""
    merged: dict[str, Any] = {}
    kwargs_model = None  # the model the kwargs in `merged` were given beside, if any
    for layer in layers:
        merged.update(layer)
        if "model_kwargs" in layer:
            kwargs_model = layer.get("model")
        elif kwargs_model is not None and merged.get("model") != kwargs_model:
            merged.pop("model_kwargs", None)
            kwargs_model = None
    return merged


def _build_once(config: TrainConfig) -> None:
    """Build the configured network: its own check of `model_kwargs` is the only complete one."""
    from cifarnet.data.datasets import get_spec
    from cifarnet.models import create_model

    create_model(config.model, get_spec(config.dataset).num_classes, **config.model_kwargs)


CONFIG_FILE_MAX_BYTES = 1 << 20  # a config.json is a few KiB


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON object of TrainConfig fields (a run's config.json works as is). What is not a
    regular file (a FIFO, /dev/zero, a folder), or is larger than CONFIG_FILE_MAX_BYTES, is
    refused before any of it is read."""
    path = Path(path)
    try:
        values = json.loads(_read_bounded(path))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests its JSON too deeply") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of settings")
    return values


def _read_bounded(path: Path) -> str:
    """The text of `path`, a regular file of at most CONFIG_FILE_MAX_BYTES; its type and size
    are checked before it is opened (a FIFO's open would wait for a writer)."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise ConfigError(f"cannot read config file {path}: it is a folder; give a JSON file")
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"cannot read config file {path}: it is not a regular file (a device, FIFO or "
            "socket); give a JSON file"
        )
    cap = CONFIG_FILE_MAX_BYTES
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ConfigError(
            f"cannot read config file {path}: it is larger than {cap // 1024} KiB, and a "
            "settings file is a few KiB"
        )
    return data.decode("utf-8")


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


@dataclass(frozen=True)
class SettingSpec:
    """One TrainConfig field as the user meets it (see `setting`)."""

    name: str
    kind: str  # the field's type without "| None": int, float, str, bool, dict[str, Any]
    default: Any
    help: str
    # the option's declaration ("--ema", "--nesterov/--no-nesterov"); None: config file only
    flag: str | None
    shown: str | bool  # the default `train --help` shows; False: none


@functools.cache
def setting_specs() -> tuple[SettingSpec, ...]:
    """Every setting, in TrainConfig's field order. Unless declared, the default shown is "from
    recipe" for settings a recipe sets, the flag's name for a bool that is on, none for off or
    None, else the value."""
    return tuple(_spec(f) for f in dataclasses.fields(TrainConfig))


def _spec(f: dataclasses.Field) -> SettingSpec:
    declared: Setting | None = f.metadata.get("setting")
    if declared is None:  # a field added without its help and flag
        raise TypeError(f"declare TrainConfig.{f.name} with setting(...)")
    kind = str(f.type).removesuffix(" | None")
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    flag = declared.flag or "--" + f.name.replace("_", "-")
    if kind == "bool" and declared.flag is None:
        flag += "/--no-" + flag[2:]
    shown = declared.shown
    if shown is None:
        if any(f.name in values for values in RECIPES.values()):
            shown = "from recipe"
        elif default is True:
            shown = flag.split("/")[0][2:]
        else:
            shown = False if default is None or default is False else str(default)
    return SettingSpec(
        name=f.name,
        kind=kind,
        default=default,
        help=declared.help,
        flag=None if declared.file_only else flag,
        shown=shown,
    )


@functools.cache
def setting_spec(name: str) -> SettingSpec:
    """The setting of TrainConfig field `name`."""
    return {spec.name: spec for spec in setting_specs()}[name]


def flag_name(name: str) -> str:
    """How the user sets `name`: its flag, or the config file's key."""
    spec = setting_spec(name)
    if spec.flag is None:
        return f"{name} (config file)"
    return spec.flag.split("/")[0]
