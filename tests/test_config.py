"""TrainConfig: recipes, the precedence of recipe < --config file < flags, validation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cifarnet.config.docs import REGENERATE, settings_page
from cifarnet.config.settings import (
    RECIPES,
    TrainConfig,
    flag_name,
    read_config_file,
    resolve_config,
    setting_specs,
)
from cifarnet.errors import ConfigError


def _write(path: Path, values: object) -> Path:
    path.write_text(json.dumps(values))
    return path


def test_reference_recipe_is_the_write_up() -> None:
    c = resolve_config({"recipe": "reference"})
    assert (c.lr, c.weight_decay, c.batch_size, c.schedule) == (0.01, 1e-5, 256, "plateau")
    assert (c.momentum, c.nesterov, c.label_smoothing, c.warmup_epochs) == (0.9, False, 0.0, 0.0)
    assert c.zero_init_residual is False  # the write-up's own initialisation
    assert c.decay_norm_and_bias is True  # SGD(model.parameters(), weight_decay=1e-5)
    assert c.model == "resnet_reference" and c.epochs == 70


def test_default_recipe_differs_from_reference() -> None:
    c = resolve_config({})
    assert c.recipe == "default" and c.lr == RECIPES["default"]["lr"] != 0.01
    assert c.schedule == "cosine" and c.zero_init_residual is True
    assert c.decay_norm_and_bias is False
    assert resolve_config({"recipe": "fast"}).zero_init_residual is False


def test_file_overrides_recipe_and_flags_override_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"recipe": "reference", "lr": 0.05, "epochs": 7})
    c = resolve_config({"epochs": 3}, path)
    assert c.recipe == "reference"
    assert c.lr == 0.05  # file beats recipe
    assert c.epochs == 3  # flag beats file
    assert c.weight_decay == 1e-5  # untouched recipe value


def test_unset_flag_never_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"lr": 0.05, "batch_size": 32})
    c = resolve_config({"lr": None, "batch_size": None, "seed": 4}, path)
    assert (c.lr, c.batch_size, c.seed) == (0.05, 32, 4)


def test_recipe_flag_replaces_the_files_recipe_but_not_its_values(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", {"recipe": "default", "batch_size": 32})
    c = resolve_config({"recipe": "reference"}, path)
    assert (c.recipe, c.lr, c.batch_size) == ("reference", 0.01, 32)


def test_json_round_trip_and_run_config_with_meta(tmp_path: Path) -> None:
    c = resolve_config(
        {"recipe": "reference", "epochs": 5, "model_kwargs": {"relu_after_add": True}}
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    path = _write(tmp_path / "config.json", {**c.to_dict(), "_meta": {"torch": "x"}})
    assert resolve_config({}, path) == c


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"epochs": 0}, "--epochs must be a positive integer, got 0"),
        ({"epochs": -3}, "--epochs must be a positive integer"),
        ({"batch_size": 0}, "--batch-size must be a positive integer"),
        ({"lr": 0.0}, "--lr must be a positive number"),
        ({"lr": -0.1}, "--lr must be a positive number"),
        ({"lr": float("nan")}, "--lr must be a positive number"),
        ({"time_minutes": 0}, "--time must be a positive number"),
        ({"momentum": 1.0}, r"--momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, "--weight-decay must be >= 0"),
        ({"val_size": -1}, "--val-size must be an integer >= 0"),
        ({"subset": 0}, "--subset must be a positive integer"),
        ({"dataset": "cifar1000"}, r"unknown dataset 'cifar1000' \(did you mean 'cifar100'\?\)"),
        ({"recipe": "referense"}, r"unknown recipe.*did you mean 'reference'.*default"),
        ({"precision": "fp31"}, r"unknown precision 'fp31' \(did you mean 'fp32'\?\)"),
        ({"schedule": "cosin"}, r"did you mean 'cosine'"),
        ({"device": "cdua"}, r"unknown device 'cdua' \(did you mean 'cuda'\?\).*cuda:N"),
        ({"device": "quantum"}, r"unknown device 'quantum'; use one of: auto, cpu, cuda"),
    ],
)
def test_bad_values_are_config_errors(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(flags)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "ten"}, "--epochs must be a positive integer, got 'ten'"),
        ({"epochs": 3.0}, "--epochs must be a positive integer"),
        ({"lr": "0.1"}, "--lr must be a positive number"),
        ({"recipe": 5}, "recipe must be a string, got 5"),
        ({"recipe": ["reference"]}, "recipe must be a string"),
        ({"dataset": 100}, "dataset must be a string, got 100"),
        ({"seed": "x"}, "seed must be an integer, got 'x'"),
        ({"val_size": True}, "--val-size must be an integer >= 0, got True"),
        ({"subset": True}, "--subset must be a positive integer, got True"),
        ({"cutout": False}, "--cutout must be an integer >= 0, got False"),
        ({"momentum": False}, r"--momentum must be in \[0, 1\), got False"),
        ({"weight_decay": True}, "--weight-decay must be >= 0, got True"),
        ({"nesterov": "yes"}, "nesterov must be true or false, got 'yes'"),
        ({"name": 3}, "name must be a string"),
        ({"model_kwargs": [1]}, "model_kwargs must be a JSON object"),
        ({"epoch": 3}, r"unknown setting\(s\) epoch; valid: .*epochs"),
    ],
)
def test_bad_config_file_values(tmp_path: Path, values: dict, message: str) -> None:
    path = _write(tmp_path / "c.json", values)
    with pytest.raises(ConfigError, match=message) as err:
        resolve_config({}, path)
    assert str(err.value).startswith(f"{path}: ")  # the file is named, once
    assert str(err.value).count(str(path)) == 1


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.json"):
        read_config_file(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="cannot read config file"):
        read_config_file(tmp_path)  # a folder
    (tmp_path / "bad.json").write_text("{'lr': 0.1")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        read_config_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        read_config_file(tmp_path / "list.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match=r"binary\.json"):
        read_config_file(tmp_path / "binary.json")


def test_config_is_frozen() -> None:
    c = TrainConfig()
    with pytest.raises(AttributeError):
        c.lr = 1.0  # type: ignore[misc]
    assert c.replace(lr=0.5).lr == 0.5 and c.lr == 0.1


def test_a_recipe_label_without_the_recipes_values_is_refused() -> None:
    # TrainConfig's defaults are the default recipe's: the label alone would mislabel the run
    with pytest.raises(ConfigError, match=r"labelled recipe 'fast' but holds none of its"):
        TrainConfig(recipe="fast")
    with pytest.raises(ConfigError, match=r"TrainConfig\.from_recipe\('reference', \.\.\.\)"):
        TrainConfig(recipe="reference", epochs=3)
    fast = TrainConfig.from_recipe("fast", epochs=3)
    assert (fast.recipe, fast.model, fast.lr, fast.batch_size, fast.epochs) == (
        "fast",
        "fastnet",
        1.5,
        1024,
        3,
    )
    assert fast == resolve_config({"recipe": "fast", "epochs": 3})
    # a recipe's values with some of them changed keep its label
    assert TrainConfig.from_recipe("reference", lr=0.1).replace(batch_size=128).lr == 0.1
    # values the user chose (a default run's config.json under --recipe reference) win over
    # the recipe, as the precedence says, label or not
    chosen = resolve_config({**TrainConfig().to_dict(), "recipe": "reference"})
    assert (chosen.recipe, chosen.batch_size) == ("reference", 128)
    assert chosen.replace(epochs=3).epochs == 3
    with pytest.raises(ConfigError, match=r"TrainConfig\.from_recipe: unknown setting"):
        TrainConfig.from_recipe("fast", foo=1)
    with pytest.raises(ConfigError, match="recipe must be a string"):
        TrainConfig.from_recipe(None)


def test_model_kwargs_from_a_file_are_checked_with_the_model_named_anywhere(tmp_path: Path) -> None:
    path = _write(tmp_path / "kw.json", {"model_kwargs": {"widths": [8, 8, 16, 16]}})
    assert resolve_config({"model": "resnet"}, path).model_kwargs == {"widths": [8, 8, 16, 16]}
    with pytest.raises(ConfigError, match=r"kw\.json: model 'resnet_reference' does not accept"):
        resolve_config({}, path)  # the recipe's model has no widths
    # a resumed run's network is its checkpoint's: the file's kwargs are checked against it there
    assert resolve_config({}, path, check_model=False).model == "resnet_reference"


# each setting is declared once, with setting(): the CLI, flag_name and the docs come from it


def test_every_setting_is_declared_with_its_help() -> None:
    for f in dataclasses.fields(TrainConfig):
        assert "setting" in f.metadata, f"declare TrainConfig.{f.name} with setting(...)"
    for spec in setting_specs():
        assert spec.help.strip().endswith((".", ")")), f"{spec.name}: help must be a sentence"
        if spec.flag is not None:  # the `train` option's value is parsed as this type
            assert spec.kind in ("int", "float", "str", "bool"), spec.name


def test_flag_name_is_the_declared_flag_or_the_config_file_key() -> None:
    assert flag_name("batch_size") == "--batch-size"
    assert (flag_name("ema_decay"), flag_name("time_minutes")) == ("--ema", "--time")
    assert (flag_name("nesterov"), flag_name("deterministic")) == ("--nesterov", "--deterministic")
    assert flag_name("crop_padding") == "crop_padding (config file)"
    assert flag_name("flip") == "flip (config file)"  # no --flip exists


def test_docs_settings_md_is_the_generated_table() -> None:
    path = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    assert path.read_text() == settings_page(), (
        f"docs/settings.md is out of date: regenerate it with `make docs` ({REGENERATE})"
    )
    for spec in setting_specs():
        assert f"| `{spec.name}` |" in path.read_text()
