"""--time: a wall-clock budget that the schedule is fitted to and that the run stays inside."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def test_time_budget_ends_inside_the_budget_with_the_schedule_fitted(tiny_config) -> None:
    from cifarnet.trainer import train

    budget_minutes = 0.05  # 3 s: dozens of tiny epochs
    config = tiny_config.replace(time_minutes=budget_minutes, schedule="linear", warmup_epochs=0.0)
    summary = train(config)
    run = Path(summary["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    assert summary["time_budget_minutes"] == budget_minutes
    assert json.loads((run / "config.json").read_text())["time_minutes"] == budget_minutes
    assert summary["epochs"] >= 3  # --epochs (2) does not stop a budgeted run
    assert 0.7 * 3.0 <= summary["train_seconds"] <= 3.0
    assert metrics["elapsed_seconds"].iloc[-1] <= 3.0
    # linear decay over the budget: the lr falls epoch by epoch and ends near zero
    assert metrics["lr"].is_monotonic_decreasing
    assert metrics["lr"].iloc[-1] < 0.15 * config.lr
