"""The long recipe: its values, one training step of it on every registered model (its policy,
optimizer groups, label smoothing and EMA as a run builds them), and a whole tiny run of it."""

from __future__ import annotations

import math

import pytest
import torch

from cifarnet.config.settings import TrainConfig
from cifarnet.data.augment import Augment, Normalize
from cifarnet.models import create_model, list_models
from cifarnet.models.resnet import zero_init_residual
from cifarnet.runtime.device import Runtime
from cifarnet.training.ema import Ema
from cifarnet.training.optim import build_optimizer
from cifarnet.training.setup import training_policy
from cifarnet.training.step import train_step
from cifarnet.training.trainer import train


def test_long_recipe_values() -> None:
    c = TrainConfig.from_recipe("long")
    assert (c.epochs, c.schedule, c.nesterov, c.weight_decay, c.label_smoothing) == (
        200,
        "cosine",
        True,
        5e-4,
        0.1,
    )
    assert (c.augment, c.random_erasing, c.ema_decay) == ("trivialaugment", 0.25, 0.999)
    assert c.model == "resnet_reference"  # the recipe leaves the network to --model


@pytest.mark.parametrize("name", list_models())
def test_one_step_of_the_long_recipe_on_every_model(name: str) -> None:
    config = TrainConfig.from_recipe("long", model=name)
    torch.manual_seed(0)
    model = create_model(name, 100)
    if config.zero_init_residual:
        zero_init_residual(model)
    optimizer = build_optimizer(model, config)
    for group in optimizer.param_groups:  # the lr after a short warm-up, not its first 0
        group["lr"] = config.lr * 0.1
    ema = Ema(model, config.ema_decay)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    policy = training_policy(config)
    x = policy(Augment()(images, g), epoch=1, step=1)
    x = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))(x)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    runtime = Runtime(torch.device("cpu"), "fp32", False)
    result = train_step(model, x, torch.arange(4), optimizer, runtime, config.label_smoothing, None)
    ema.update_parameters(model)
    ema.update_parameters(model)
    assert math.isfinite(result.loss_sum.item())
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) >= len(changed) // 2, f"{sum(changed)} of {len(changed)} moved"
    assert all(torch.isfinite(p).all() for p in ema.module.parameters())


def test_a_tiny_run_of_the_long_recipe(tiny_config: TrainConfig) -> None:
    """The recipe's values with the tiny run's network, data and device."""
    kept = ("model", "model_kwargs", "data_dir", "runs_dir", "device", "precision", "download")
    config = TrainConfig.from_recipe(
        "long",
        **{name: getattr(tiny_config, name) for name in kept},
        epochs=2,
        batch_size=32,
        subset=64,
        val_size=20,
    )
    summary = train(config)
    assert summary["recipe"] == "long" and summary["epochs"] == 2
    assert math.isfinite(summary["test_loss"])
