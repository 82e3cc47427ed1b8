"""Lookahead's sync (every 5 steps, a decay growing as the cube of progress), what it leaves
alone, and its state in last.pt (a damaged one refused in one line on resuming). That a resume
continues exactly is tested with the other states in test_reliability.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import save_checkpoint_dict
from torch import nn

from cifarnet.errors import CheckpointError
from cifarnet.io.checkpoint import load_checkpoint
from cifarnet.training.lookahead import EVERY, PEAK_DECAY, Lookahead
from cifarnet.training.trainer import train


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model(torch.randn(2, 3, 8, 8))  # running statistics away from their initial values
    return model


def _shift(model: nn.Module, by: float) -> None:
    """Move every floating-point parameter and buffer by `by`, as steps would."""
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(by)


def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_between_syncs_the_model_is_left_alone() -> None:
    model = _model()
    lookahead = Lookahead(model)
    _shift(model, 1.0)
    moved = _floats(model)
    for step in range(1, EVERY):
        lookahead.after_step(model, step, progress=1.0)
    for name, value in _floats(model).items():
        torch.testing.assert_close(value, moved[name], rtol=0, atol=0)


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0, 1.2])
def test_a_sync_restarts_the_model_from_the_slow_weights(progress: float) -> None:
    model = _model()
    start = _floats(model)
    lookahead = Lookahead(model)
    _shift(model, 1.0)
    lookahead.after_step(model, 2 * EVERY, progress)
    decay = PEAK_DECAY * min(progress, 1.0) ** 3  # past the end (--time) counts as the end
    for name, value in _floats(model).items():
        # the slow weights: decay of themselves (the start) and 1 - decay of the model's
        torch.testing.assert_close(value, start[name] + (1.0 - decay))
        torch.testing.assert_close(lookahead.slow[name], value, rtol=0, atol=0)
    counter = model.state_dict()["1.num_batches_tracked"]
    assert counter.item() == 1  # the integer batch counter is not averaged


def test_the_slow_weights_survive_a_state_dict_round_trip() -> None:
    model = _model()
    lookahead = Lookahead(model)
    _shift(model, 1.0)
    lookahead.after_step(model, EVERY, progress=1.0)
    saved = lookahead.state_dict()
    assert all(v.device.type == "cpu" for v in saved.values())
    fresh = Lookahead(_model())
    fresh.load_state_dict(saved)
    for name, value in saved.items():
        torch.testing.assert_close(fresh.slow[name], value, rtol=0, atol=0)
    with pytest.raises(KeyError, match="lookahead_state"):
        fresh.load_state_dict({"0.weight": saved["0.weight"]})


DAMAGED = [
    (lambda state: list(state.values()), "TypeError"),
    (lambda state: {k: v for k, v in list(state.items())[1:]}, "KeyError"),
    (lambda state: {k: torch.tensor(0.0) for k in state}, "ValueError"),
]


@pytest.mark.parametrize(("damage", "error"), DAMAGED, ids=["not-a-dict", "a-name-less", "0-d"])
def test_a_damaged_lookahead_state_is_refused_in_one_line(
    tiny_config, tmp_path: Path, damage, error: str
) -> None:
    run = Path(train(tiny_config.replace(lookahead=True, epochs=1))["run_dir"])
    last = load_checkpoint(run / "last.pt")
    assert set(last["lookahead_state"]) == {
        k for k, v in last["state_dict"].items() if v.is_floating_point()
    }
    last["lookahead_state"] = damage(last["lookahead_state"])
    crafted = save_checkpoint_dict(last, tmp_path / "last.pt")
    with pytest.raises(CheckpointError) as err:
        train(resume=crafted, overrides={"epochs": 2})
    message = str(err.value)
    assert "cannot resume from it" in message and error in message and "\n" not in message
