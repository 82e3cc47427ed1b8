"""docs/settings.md, made from TrainConfig's declarations: `python -m cifarnet.config.docs >
docs/settings.md` (or `make docs`) after changing a setting."""

from __future__ import annotations

import json
from typing import Any

from cifarnet.config.settings import RECIPES, SettingSpec, setting_specs

REGENERATE = "python -m cifarnet.config.docs > docs/settings.md"

_INTRO = f"""# Training settings

Every setting of `cifarnet train`. Values come from three layers, later ones winning: the
recipe's values (`--recipe`), a JSON config file (`--config`), then the flags given. The
config-file keys are also those of a run's config.json, which works as a `--config` file.
Settings without a flag are set in a config file only.

<!-- Generated from cifarnet/config/settings.py: {REGENERATE} -->

"""


def settings_table() -> str:
    """A Markdown table of every setting: flag, config-file key, default, help."""
    rows = ["| Flag | Config-file key | Default | Description |", "| --- | --- | --- | --- |"]
    for spec in setting_specs():
        cells = (_flag(spec), f"`{spec.name}`", _default(spec), spec.help)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def settings_page() -> str:
    """The whole of docs/settings.md."""
    return _INTRO + settings_table()


def _flag(spec: SettingSpec) -> str:
    if spec.flag is None:
        return "config file only"
    return " / ".join(f"`{flag}`" for flag in spec.flag.split("/"))


def _default(spec: SettingSpec) -> str:
    """The default recipe's value, then the other recipes' where they differ; for a None
    default, what it means."""
    default = RECIPES["default"].get(spec.name, spec.default)
    others = [
        f"{recipe}: {_value(values.get(spec.name, spec.default))}"
        for recipe, values in RECIPES.items()
        if values.get(spec.name, spec.default) != default
    ]
    text = _value(default)
    if others:
        text += f" ({', '.join(others)})"
    elif default is None and isinstance(spec.shown, str):
        text += f" ({spec.shown})"
    return text


def _value(value: Any) -> str:
    return f"`{json.dumps(value)}`"


if __name__ == "__main__":
    print(settings_page(), end="")
