"""`--tensorboard`: event files in the run folder, read back with TensorBoard's own reader."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cifarnet.errors import ConfigError
from cifarnet.training.tensorboard import EPOCH_TAGS, with_tensorboard
from cifarnet.training.trainer import train


def test_event_files_hold_the_metrics_lr_per_step_and_graph(tiny_config) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train(tiny_config.replace(tensorboard=True))
    folder = Path(summary["run_dir"])
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert set(EPOCH_TAGS.values()) <= tags and "lr/step" in tags and "test/top1" in tags
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    val = events.Scalars("top1/val")
    assert [e.step for e in val] == [1, 2]
    for event, row in zip(val, rows, strict=True):
        assert event.value == pytest.approx(float(row["val_top1"]), abs=1e-4)
    steps = [e.step for e in events.Scalars("lr/step")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2 * 2  # every step on CPU
    assert events.Scalars("test/top1")[0].value == pytest.approx(summary["test_top1"], abs=1e-4)
    assert events.Graph() is not None


def test_off_by_default_and_missing_package_is_one_line(tiny_config, monkeypatch) -> None:
    marker = object()
    assert with_tensorboard(marker, tiny_config) is marker  # type: ignore[arg-type]
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'cifarnet\[tensorboard\]'"):
        with_tensorboard(marker, tiny_config.replace(tensorboard=True))  # type: ignore[arg-type]
