"""The speedrun recipe: its network (FastNet with residual stages) and values, another --model
dropping the recipe's network arguments, and a tiny run of it evaluated with 6-view TTA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cifarnet.config.settings import TrainConfig, resolve_config
from cifarnet.errors import ConfigError
from cifarnet.models import count_parameters, create_model
from cifarnet.models.complexity import count_macs
from cifarnet.models.fastnet import FastNet
from cifarnet.training.trainer import train


def test_speedrun_recipe_builds_the_residual_fastnet() -> None:
    c = TrainConfig.from_recipe("speedrun")
    assert (c.model, c.epochs, c.batch_size, c.crop_padding, c.cutout) == (
        "fastnet",
        10,
        1024,
        4,
        12,
    )
    assert c.resize_from == 32  # every step at full size
    assert c.val_size == 0  # all 50,000 training images; the last epoch is best.pt
    with torch.device("meta"):
        model = create_model(c.model, 100, **c.model_kwargs)
    # 3x3 convolutions: 24->128 at 31x31, 2 x 128->128 at 15x15, 128->512 at 15x15,
    # 2 x 512->512 at 7x7, 512->512 at 7x7, 2 x 512->512 at 3x3; the 2x2 stem 3->24 at 31x31;
    # the head 512->100
    convs = 9 * (
        24 * 128 * 31 * 31
        + 2 * 128 * 128 * 15 * 15
        + 128 * 512 * 15 * 15
        + 3 * 512 * 512 * 7 * 7
        + 2 * 512 * 512 * 3 * 3
    )
    assert count_macs(model) == pytest.approx(convs + 12 * 24 * 31 * 31 + 512 * 100, rel=0.01)
    assert count_parameters(model) == 12_767_288


@pytest.mark.parametrize(("model", "kwargs"), [("resnet20", {}), ("fastnet", None)])
def test_another_model_drops_the_recipes_network_arguments(model: str, kwargs) -> None:
    c = resolve_config({"recipe": "speedrun", "model": model})
    recipe = TrainConfig.from_recipe("speedrun")
    assert c.model_kwargs == (recipe.model_kwargs if kwargs is None else kwargs)
    assert c.lr == recipe.lr  # the rest of the recipe stays


def test_a_config_files_network_arguments_win(tmp_path: Path) -> None:
    path = tmp_path / "small.json"
    path.write_text('{"model_kwargs": {"widths": [8, 16, 16], "convs_per_stage": 3}}')
    c = resolve_config({"recipe": "speedrun"}, config_file=path)
    assert c.model_kwargs == {"widths": [8, 16, 16], "convs_per_stage": 3}
    # a run's config.json with another --model: the run's network arguments are dropped too
    path.write_text(json.dumps(TrainConfig.from_recipe("speedrun").to_dict()))
    c = resolve_config({"model": "resnet20"}, config_file=path)
    assert (c.recipe, c.model, c.model_kwargs, c.cutout) == ("speedrun", "resnet20", {}, 12)


def test_replacing_the_model_drops_the_old_networks_arguments() -> None:
    c = TrainConfig.from_recipe("speedrun")
    assert c.replace(model="resnet20").model_kwargs == {}
    assert c.replace(model="fastnet").model_kwargs == c.model_kwargs
    narrow = {"widths": [8, 8, 8]}
    assert c.replace(model="fastnet", model_kwargs=narrow).model_kwargs == narrow


def test_configs_do_not_share_the_recipes_network_arguments() -> None:
    first = TrainConfig.from_recipe("speedrun")
    first.model_kwargs["widths"].append(1024)
    assert TrainConfig.from_recipe("speedrun").model_kwargs["widths"] == [128, 512, 512]


def test_residual_stages_add_the_branch_to_their_input() -> None:
    torch.manual_seed(0)
    model = FastNet(10, widths=(8, 16, 16), convs_per_stage=3).eval()
    stage = model.stages[0]
    x = torch.randn(2, 24, 31, 31)
    with torch.no_grad():
        h = stage.act(stage.bn1(stage.pool(stage.conv1(x))))
        branch = stage.bn3(stage.conv3(stage.act(stage.bn2(stage.conv2(h)))))
        assert torch.allclose(stage(x), stage.act(h + branch))
    plain = FastNet(10, widths=(8, 16, 16))
    assert not hasattr(plain.stages[0], "conv3")  # the default keeps its checkpoints' keys


def test_convs_per_stage_other_than_2_or_3_is_one_line() -> None:
    with pytest.raises(ConfigError, match="convs_per_stage must be 2 or 3, got 4"):
        create_model("fastnet", 100, convs_per_stage=4)


def test_a_tiny_run_of_the_speedrun_recipe_evaluates_with_shifted_tta(
    tiny_config: TrainConfig,
) -> None:
    """The recipe's values (cutout, translations, residual stages) with a narrow network."""
    from cifarnet.tasks.evaluation import evaluate

    kept = ("data_dir", "runs_dir", "device", "precision", "download")
    config = TrainConfig.from_recipe(
        "speedrun",
        **{name: getattr(tiny_config, name) for name in kept},
        model_kwargs={"widths": [8, 16, 16], "convs_per_stage": 3},
        epochs=2,
        batch_size=32,
        subset=64,
    )
    summary = train(config)
    assert summary["recipe"] == "speedrun" and math.isfinite(summary["test_loss"])
    assert summary["best_epoch"] == 2 and summary["best_val_top1"] is None  # no held-out set
    result = evaluate(Path(summary["run_dir"]) / "best.pt", tta_shift=1, device="cpu")
    assert result.tta_shift == 1 and math.isfinite(result.loss)
