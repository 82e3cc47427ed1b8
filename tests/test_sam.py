"""SAM / ASAM: one step against a hand computation, the weights restored exactly before the
base optimizer's step, BatchNorm statistics from the first pass only, and rho checked."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cifarnet.errors import ConfigError
from cifarnet.training.sam import SAM, sam_step


class Quadratic(nn.Module):
    """loss(w) = (w1^2 + 3 w2^2) / 2: gradient (w1, 3 w2)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.w[0] ** 2 + 3 * self.w[1] ** 2)


def _step(adaptive: bool, rho: float, lr: float) -> list[float]:
    model = Quadratic()
    sam = SAM(torch.optim.SGD(model.parameters(), lr=lr), rho=rho, adaptive=adaptive)
    sam_step(sam, model, model.loss)
    return model.w.tolist()


def test_sam_step_matches_the_hand_computation() -> None:
    # at w = (1, -2): g = (1, -6), |g| = sqrt(37); e = 0.1 g / |g|
    e1, e2 = 0.1 / math.sqrt(37), -0.6 / math.sqrt(37)
    # the gradient at w + e = (1 + e1, -2 + e2) is (1 + e1, 3 (-2 + e2)); SGD, lr 0.1, from w
    expected = [1 - 0.1 * (1 + e1), -2 - 0.1 * 3 * (-2 + e2)]
    assert _step(adaptive=False, rho=0.1, lr=0.1) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx([0.8983560, -1.3704082], abs=1e-7)


def test_asam_step_matches_the_hand_computation() -> None:
    # ASAM: T(w) g = |w| g = (1, -12), norm sqrt(145); e = rho w^2 g / |T(w) g|
    # = 0.5 (1, -24) / sqrt(145)
    e1, e2 = 0.5 / math.sqrt(145), -12.0 / math.sqrt(145)
    expected = [1 - 0.1 * (1 + e1), -2 - 0.1 * 3 * (-2 + e2)]
    assert _step(adaptive=True, rho=0.5, lr=0.1) == pytest.approx(expected, rel=1e-12)


def test_weights_are_restored_exactly_before_the_base_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    before = [p.detach().clone() for p in model.parameters()]
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.0), rho=0.5)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    loss = sam_step(sam, model, lambda: nn.functional.cross_entropy(model(x), y))
    assert loss.requires_grad and loss.item() > 0  # the first pass's loss
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q) and p.grad is None


def test_batchnorm_statistics_come_from_the_first_pass_only() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 2, (6,))
    model(x)  # materialise the lazy layer
    bn = model[1]
    bn.reset_running_stats()
    reference = nn.BatchNorm2d(4)
    with torch.no_grad():
        reference(model[0](x))  # the statistics of one pass at the unperturbed weights
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)
    outputs = sam_step(sam, model, lambda: (nn.functional.cross_entropy(model(x), y), "extra"))
    assert outputs[1] == "extra"  # what the closure returned first, passed back
    assert bn.num_batches_tracked.item() == 1
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    torch.testing.assert_close(bn.running_var, reference.running_var)


def test_groups_and_state_are_the_base_optimizers() -> None:
    model = Quadratic()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sam = SAM(base, rho=0.05)
    assert sam.param_groups is base.param_groups
    sam_step(sam, model, model.loss)
    assert sam.state_dict()["state"][0]["momentum_buffer"].shape == (2,)


@pytest.mark.parametrize("rho", [0, -0.05, 0.0, float("nan"), True])
def test_rho_must_be_positive(rho) -> None:
    model = Quadratic()
    with pytest.raises(ConfigError, match="SAM rho must be"):
        SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=rho)
