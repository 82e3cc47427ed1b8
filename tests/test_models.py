"""Model registry, the reference network's exact shape, forward shapes of every family."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from cifarnet.errors import ConfigError
from cifarnet.models import build_model, count_parameters, create_model, list_models, model_config

REFERENCE_PARAMETERS = 3_903_620  # the write-up's network at 100 classes


def test_registry_lists_the_families() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"resnet_reference", "resnet18", "resnet34", "resnet", "fastnet"} <= set(names)


def test_reference_parameter_count() -> None:
    assert count_parameters(create_model("resnet_reference", 100)) == REFERENCE_PARAMETERS


def test_reference_state_dict_keys_match_the_write_up() -> None:
    model = create_model("resnet_reference", 100)
    children = [name for name, _ in model.named_children()]
    for name in ("conv1", "bn", "dropout", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "fc_layer"):
        assert name in children
    sd = model.state_dict()
    assert {k.split(".")[0] for k in sd} == {
        "conv1",
        "bn",
        "conv2_x",
        "conv3_x",
        "conv4_x",
        "conv5_x",
        "fc_layer",
    }
    # blocks per stage [2, 4, 4, 2]; 3x3 projection shortcut where the shape changes
    for stage, blocks in zip(
        ("conv2_x", "conv3_x", "conv4_x", "conv5_x"), (2, 4, 4, 2), strict=True
    ):
        assert f"{stage}.{blocks - 1}.conv2.weight" in sd
        assert f"{stage}.{blocks}.conv1.weight" not in sd
    assert "conv2_x.0.downsample.0.weight" not in sd  # 32 -> 32, stride 1: identity shortcut
    assert sd["conv3_x.0.downsample.0.weight"].shape == (64, 32, 3, 3)
    assert sd["conv1.weight"].shape == (32, 3, 3, 3)
    assert sd["fc_layer.weight"].shape == (100, 256)
    assert isinstance(model.dropout, nn.Dropout2d) and model.dropout.p == pytest.approx(0.02)


def test_reference_initialisation() -> None:
    model = create_model("resnet_reference", 100)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 1 + 2 * 12 + 3  # stem, two per basic block, three projection shortcuts
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    # Kaiming normal, fan_out: std = sqrt(2 / (out_channels * 3 * 3)); on this 32 -> 64
    # convolution fan_in would give sqrt(2 / (32 * 9)), 41% more
    w = model.conv3_x[0].conv1.weight
    assert w.shape == (64, 32, 3, 3)
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


def test_zero_init_residual_makes_each_block_its_shortcut() -> None:
    from cifarnet.models.resnet import zero_init_residual

    model = create_model("resnet_reference", 100)
    assert zero_init_residual(model) == 12  # [2, 4, 4, 2] basic blocks
    block = model.conv2_x[0]  # no downsample: the block is the identity at init
    assert torch.all(block.bn2.weight == 0) and torch.all(block.bn1.weight == 1)
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(block.train()(x), x)
    assert zero_init_residual(create_model("fastnet", 100)) == 0


@pytest.mark.parametrize(
    ("name", "classes"),
    [("resnet_reference", 100), ("resnet_reference", 10), ("resnet18", 100), ("fastnet", 100)],
)
def test_forward_shape(name: str, classes: int) -> None:
    model = create_model(name, classes).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, classes)
    assert torch.isfinite(out).all()


def test_rebuilt_from_config_alone() -> None:
    kwargs = {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1]}
    original = create_model("resnet", 10, **kwargs)
    rebuilt = build_model(model_config("resnet", 10, kwargs))
    rebuilt.load_state_dict(original.state_dict())  # same keys and shapes, or this raises
    assert count_parameters(rebuilt) == count_parameters(original)


def test_unknown_model_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'resnet18'\?.*resnet_reference"):
        create_model("resnet81")


@pytest.mark.parametrize("kwargs", [{"depth": 3}, {"pool": "median"}])
def test_bad_model_kwargs_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="resnet"):
        create_model("resnet", 100, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"widths": [8, 8, 16]},
        {"depths": [1, 1, 1, 1, 1]},
        {"depths": [1, 0, 1, 1]},
        {"widths": [8, 8, 16, 16.5]},
        {"widths": 8},
    ],
)
def test_resnet_stage_lists_of_the_wrong_shape_are_one_config_error(kwargs) -> None:
    with pytest.raises(ConfigError, match="model 'resnet' does not accept"):
        create_model("resnet", 10, **kwargs)


def test_golden_logits_of_a_seeded_reference_network() -> None:
    # recorded once (torch 2.14.1, CPU, fp32): any change to the network's layers, their order,
    # its initialisation or its forward pass moves them far beyond the tolerance
    torch.manual_seed(0)
    model = create_model("resnet_reference", 100).eval()
    x = torch.linspace(-2, 2, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)  # (2, 100)
    expected = torch.tensor(
        [
            [-12.374866, -51.687176, -49.962502, -18.362740, 4.588896, -53.493919],
            [-10.363121, -19.208294, -26.727951, -1.860770, 2.912658, -28.807507],
        ]
    )
    torch.testing.assert_close(logits[:, :6], expected, rtol=1e-4, atol=1e-3)


def test_global_max_pool_is_adaptive_max_pooling_without_its_operator() -> None:
    from cifarnet.models.common import GlobalMaxPool

    torch.manual_seed(0)
    for shape in ((2, 8, 4, 4), (3, 5, 7, 3), (1, 2, 1, 1)):
        x = torch.randn(shape, requires_grad=True)
        ours, theirs = GlobalMaxPool()(x), nn.AdaptiveMaxPool2d(1)(x).flatten(1)
        assert torch.equal(ours, theirs)
        weights = torch.randn(ours.shape)
        (grad,) = torch.autograd.grad((ours * weights).sum(), x)
        (expected,) = torch.autograd.grad((theirs * weights).sum(), x)
        assert torch.equal(grad, expected)
    for name in ("fastnet", "resnet_reference"):  # the two that pool by their maximum
        model = create_model(name, 10)
        assert isinstance(model.pool, GlobalMaxPool)
        # a pooling layer holds no state: checkpoints from before it was a reduction still load
        assert not [k for k in model.state_dict() if k.startswith("pool.")]


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on the CPU needs g++")
def test_global_max_pool_trains_compiled_in_bf16() -> None:
    """Compiled with bf16 autocast, the pooling after a GELU gives finite gradients, those of
    the eager module (an `amax` there gave NaN from the first backward pass)."""
    from cifarnet.models.common import GlobalMaxPool

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.GELU(), GlobalMaxPool())
    x = torch.randn(4, 3, 8, 8)
    grads = []
    for module in (net, torch.compile(net, dynamic=False)):
        net.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            module(x).float().square().sum().backward()
        grads.append(net[0].weight.grad.clone())
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=0.05, atol=0.05)
