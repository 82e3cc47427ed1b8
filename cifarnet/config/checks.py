"""TrainConfig's checks: the types of the values a config file can get wrong, then each value's
range, in a fixed order so that a config with several bad values is always refused for the same
one."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cifarnet.errors import ConfigError
from cifarnet.io.untrusted import has_control

IMAGE_SIZE = 32  # CIFAR images are 32x32
# --seed seeds torch's 64-bit generators as seed * 1_000_003 + epoch (the epoch's shuffling):
# within +-2**32 that stays inside the range torch.manual_seed takes
SEED_LIMIT = 2**32 - 1
INT_LIMIT = 2**31 - 1  # counts and sizes: what torch's int32 arguments take
# a learning rate, or its scale for biases: their product stays finite in float32 (3.4e38)
LR_LIMIT = 1e18
# RandAugment's ranges: its 14 operations, magnitudes 0..30 (data/policies.py: RANDAUGMENT_OPS,
# MAGNITUDE_BINS)
RANDAUGMENT_MAX_N = 14
RANDAUGMENT_MAX_M = 30
# --dist-timeout: long enough for any real wait, short enough for a datetime.timedelta
WEEK_SECONDS = 7 * 24 * 3600

# Checked before the values themselves, so that a config file's "seed": "x" or "recipe": 5 is
# one clear error rather than a TypeError deep inside torch or difflib.
_STR_FIELDS = (
    "recipe",
    "dataset",
    "model",
    "device",
    "precision",
    "schedule",
    "augment",
    "runs_dir",
    "backend",
)
_OPTIONAL_STR_FIELDS = ("data_dir", "name")
_BOOL_FIELDS = (
    "nesterov",
    "decay_norm_and_bias",
    "zero_init_residual",
    "flip",
    "deterministic",
    "download",
    "sam_adaptive",
    "sync_bn",
)


def check_types(config: Any) -> None:
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


def _integer(value: Any) -> bool:
    """An int, and not a bool (which Python counts as one): `"val_size": true` is a mistake."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value > 0


def _timeout(value: Any) -> bool:
    return _positive_number(value) and value <= WEEK_SECONDS


def _positive_integer(value: Any) -> bool:
    return _integer(value) and value > 0


def _non_negative_integer(value: Any) -> bool:
    return _integer(value) and value >= 0


def _fraction(value: Any) -> bool:
    return _number(value) and 0.0 <= value < 1.0


def _non_negative_number(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value >= 0


def _probability(value: Any) -> bool:
    return _number(value) and 0.0 <= value <= 1.0


def _randaugment_n(value: Any) -> bool:
    return _integer(value) and 1 <= value <= RANDAUGMENT_MAX_N


def _randaugment_m(value: Any) -> bool:
    return _integer(value) and 0 <= value <= RANDAUGMENT_MAX_M


def _image_side(value: Any) -> bool:
    return _integer(value) and 16 <= value <= IMAGE_SIZE


def _within_image(value: int) -> bool:
    return value <= IMAGE_SIZE


def _folder_name(value: str) -> bool:
    return (
        value not in ("", ".", "..")
        and "/" not in value
        and "\\" not in value
        and not has_control(value)
    )


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _seed(value: Any) -> bool:
    return -SEED_LIMIT <= value <= SEED_LIMIT


def _sane_integer(value: Any) -> bool:
    return value is None or value <= INT_LIMIT


def _sane_rate(value: Any) -> bool:
    return value <= LR_LIMIT


def _unset_or(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """None passes: it means not set (no time budget, the default run folder name, no subset)."""
    return lambda value: value is None or test(value)


# (settings, test, message), checked in this order after the types and names: a config with
# several bad values is always refused for the same one.
_VALUE_CHECKS: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (
        ("epochs", "batch_size", "eval_batch_size", "plateau_patience", "save_every"),
        _positive_integer,
        "{flag} must be a positive integer, got {value!r}",
    ),
    (("lr",), _positive_number, "{flag} must be a positive number, got {value!r}"),
    (
        ("dist_timeout",),
        _timeout,
        "{flag} must be a number of seconds in (0, {week}], got {value!r}",
    ),
    (
        ("time_minutes",),
        _unset_or(_positive_number),
        "{flag} must be a positive number of minutes, got {value!r}",
    ),
    (
        ("momentum", "label_smoothing", "ema_decay"),
        _fraction,
        "{flag} must be in [0, 1), got {value!r}",
    ),
    (
        ("weight_decay", "warmup_epochs", "bias_lr_scale", "mixup", "cutmix"),
        _non_negative_number,
        "{flag} must be >= 0, got {value!r}",
    ),
    (("resize_from",), _image_side, "{flag} must be an integer in 16..{side}, got {value!r}"),
    (
        ("val_size", "crop_padding", "cutout"),
        _non_negative_integer,
        "{flag} must be an integer >= 0, got {value!r}",
    ),
    (("cutout",), _within_image, "{flag} must be at most {side} (the image side), got {value}"),
    (
        ("name",),
        _unset_or(_folder_name),
        "{flag} must be a plain folder name (no path separators or control characters), "
        "got {value!r}; "
        "use --runs-dir to choose where runs go",
    ),
    (
        ("subset", "patience"),
        _unset_or(_positive_integer),
        "{flag} must be a positive integer, got {value!r}",
    ),
    (
        ("sam",),
        _unset_or(_positive_number),
        "{flag} must be a positive number (the radius of the neighbourhood), got {value!r}; "
        "leave it out to train without SAM",
    ),
    (("random_erasing",), _probability, "{flag} must be in [0, 1], got {value!r}"),
    (("randaugment_n",), _randaugment_n, "{flag} must be an integer in 1..{n_max}, got {value!r}"),
    (("randaugment_m",), _randaugment_m, "{flag} must be an integer in 0..{m_max}, got {value!r}"),
    (("model_kwargs",), _is_dict, "model_kwargs must be a JSON object"),
    (("seed",), _seed, "{flag} must be an integer in -{seed}..{seed}, got {value!r}"),
    (
        ("epochs", "batch_size", "eval_batch_size", "plateau_patience", "val_size"),
        _sane_integer,
        "{flag} must be at most {int_limit}, got {value!r}",
    ),
    (
        ("crop_padding", "subset", "patience"),
        _sane_integer,
        "{flag} must be at most {int_limit}, got {value!r}",
    ),
    (
        ("lr", "bias_lr_scale"),
        _sane_rate,
        "{flag} must be at most {lr_limit:g} (the lr of biases, lr x bias lr scale, must stay "
        "finite in float32), got {value!r}",
    ),
)


def check_values(config: Any, flag_name: Callable[[str], str]) -> None:
    for names, test, message in _VALUE_CHECKS:
        for name in names:
            value = getattr(config, name)
            if not test(value):
                raise ConfigError(
                    message.format(
                        flag=flag_name(name),
                        value=value,
                        side=IMAGE_SIZE,
                        seed=SEED_LIMIT,
                        int_limit=INT_LIMIT,
                        lr_limit=LR_LIMIT,
                        n_max=RANDAUGMENT_MAX_N,
                        m_max=RANDAUGMENT_MAX_M,
                        week=WEEK_SECONDS,
                    )
                )


def check_combinations(config: Any, flag_name: Callable[[str], str]) -> None:
    """Settings that are each valid but do nothing, or cannot work, together."""
    if config.sam_adaptive and config.sam is None:
        raise ConfigError(
            f"{flag_name('sam_adaptive')} needs {flag_name('sam')} RHO (ASAM's radius, e.g. 0.5)"
        )
    if config.patience is not None and config.val_size == 0:
        raise ConfigError(
            f"{flag_name('patience')} stops on the validation top-1, and "
            f"{flag_name('val_size')} 0 holds out no validation images; give both or neither"
        )
