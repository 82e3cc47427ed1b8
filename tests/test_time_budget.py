"""--time: a wall-clock budget that the schedule is fitted to and that the run stays inside."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


def test_time_budget_ends_inside_the_budget_with_the_schedule_fitted(tiny_config) -> None:
    from cifarnet.training.trainer import train

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


def test_a_spent_budget_is_extended_with_time_not_epochs(tiny_config, monkeypatch) -> None:
    import re
    import time

    from cifarnet.errors import ConfigError
    from cifarnet.training import checkpoints, trainer

    def slow_save(payload, path):  # saving takes longer than validating (a GPU, a big model)
        time.sleep(0.2)
        save_checkpoint(payload, path)

    save_checkpoint = checkpoints.save_checkpoint
    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_save)
    summary = trainer.train(tiny_config.replace(time_minutes=0.03))  # 1.8 s
    run = Path(summary["run_dir"])
    config_json = (run / "config.json").read_bytes()
    # refused before anything is rewritten: it would train nothing
    with pytest.raises(ConfigError) as refused:
        trainer.train(resume=run / "last.pt", overrides={"epochs": 50})
    message = str(refused.value)
    assert re.search(
        r"already used [0-9.]+ of its 0\.03 minutes \(--epochs does not lengthen a --time run\); "
        r"pass --time M \(M > [0-9.]+\) to train further",
        message,
    ), message
    assert (run / "config.json").read_bytes() == config_json
    # the budget it names is enough for one more step (and the end of its epoch)
    needed = float(re.search(r"M > ([0-9.]+)", message).group(1))
    longer = trainer.train(resume=run / "last.pt", overrides={"time_minutes": needed + 0.001})
    assert longer["epochs"] == summary["epochs"] + 1
    assert len(pd.read_csv(run / "metrics.csv")) == longer["epochs"]


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
