"""--time: a wall-clock budget that the schedule is fitted to and that the run stays inside."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_time_budget_ends_inside_the_budget_with_the_schedule_fitted(tiny_config) -> None:
    from cifarnet.trainer import train

    budget_minutes = 0.1  # 6 s: dozens of tiny epochs
    config = tiny_config.replace(time_minutes=budget_minutes, schedule="linear", warmup_epochs=0.0)
    summary = train(config)
    run = Path(summary["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    assert summary["time_budget_minutes"] == budget_minutes
    assert json.loads((run / "config.json").read_text())["time_minutes"] == budget_minutes
    assert summary["epochs"] >= 3  # --epochs (2) does not stop a budgeted run
    # the stop is predicted from the last step and epoch ending: inside the budget, give or
    # take the jitter of one tiny epoch on a busy machine
    assert 0.7 * 6.0 <= summary["train_seconds"] <= 6.0 * 1.02
    assert metrics["elapsed_seconds"].iloc[-1] <= 6.0 * 1.02
    # linear decay over the budget: the lr falls epoch by epoch and ends near zero
    assert metrics["lr"].is_monotonic_decreasing
    assert metrics["lr"].iloc[-1] < 0.15 * config.lr


def test_python_api_applies_the_recipe_to_keyword_settings(tiny_config) -> None:
    import cifarnet

    tiny = (
        "data_dir",
        "model",
        "model_kwargs",
        "epochs",
        "batch_size",
        "eval_batch_size",
        "val_size",
        "runs_dir",
        "device",
        "precision",
        "download",
    )
    settings = {k: getattr(tiny_config, k) for k in tiny}
    summary = cifarnet.train(recipe="reference", **settings)
    config = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert config["recipe"] == "reference"
    assert config["lr"] == 0.01  # the reference recipe's value, not TrainConfig's default
    assert config["schedule"] == "plateau"
