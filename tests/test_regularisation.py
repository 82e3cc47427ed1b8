"""Augmentation policies and SAM inside training: where the policy runs in the batch pipeline
and how its draws are keyed, SAM's step with the trainer's runtime (bf16 autocast,
channels_last, EMA), the settings' checks on the command line, and a checkpoint written before
these settings existed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_run import one_line_failure, trained_run
from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.config.checks import RANDAUGMENT_MAX_M, RANDAUGMENT_MAX_N
from cifarnet.config.settings import POLICIES, TrainConfig
from cifarnet.data.augment import Augment, Normalize
from cifarnet.data.loader import BatchLoader
from cifarnet.data.policies import (
    MAGNITUDE_BINS,
    RANDAUGMENT_OPS,
    SeededPolicy,
    generator_for,
    make_policy,
)
from cifarnet.errors import ConfigError
from cifarnet.io.checkpoint import load_checkpoint
from cifarnet.runtime.device import Runtime
from cifarnet.training.ema import Ema
from cifarnet.training.sam import SAM, check_sam_precision
from cifarnet.training.setup import training_policy
from cifarnet.training.step import train_step
from cifarnet.training.trainer import train

runner = CliRunner()
CPU = torch.device("cpu")


def _images(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return images, torch.arange(n) % 10


def _normalize() -> Normalize:
    return Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), CPU)


def test_the_settings_names_and_ranges_are_the_policies() -> None:
    for name in POLICIES:
        assert len(make_policy(name).steps) == (0 if name == "none" else 1)
    assert len(RANDAUGMENT_OPS) == RANDAUGMENT_MAX_N
    assert MAGNITUDE_BINS - 1 == RANDAUGMENT_MAX_M
    make_policy("randaugment", n=RANDAUGMENT_MAX_N, m=RANDAUGMENT_MAX_M)


def test_the_loader_applies_the_policy_after_crop_and_flip_keyed_by_seed_epoch_step() -> None:
    images, labels = _images()
    policy = make_policy("randaugment", erasing=0.5)
    augment = Augment()
    loader = BatchLoader(
        images, labels, 4, _normalize(), augment, shuffle=True, policy=SeededPolicy(policy, 7)
    )
    order = torch.arange(8)
    batches = list(loader.batches(torch.Generator().manual_seed(1), order, epoch=3))
    # by hand: crop and flip from the loader's generator, then the policy keyed (7, 3, step)
    g = torch.Generator().manual_seed(1)
    for step, (x, _) in enumerate(batches, start=1):
        cropped = augment(images[order[(step - 1) * 4 : step * 4]], g)
        expected = _normalize()(policy(cropped, generator_for((7, 3, step))))
        assert torch.equal(x, expected)
    # a loader started at the second batch (a resumed epoch) draws the same for it
    g = torch.Generator().manual_seed(1)
    augment(images[:4], g)  # the first batch's crop and flip, as a resumed epoch's saved state
    (resumed, _) = next(loader.batches(g, order, start=1, epoch=3))
    assert torch.equal(resumed, batches[1][0])
    plain = BatchLoader(images, labels, 4, _normalize(), augment, shuffle=True)
    (unaugmented, _) = next(plain.batches(torch.Generator().manual_seed(1), order, epoch=3))
    assert not torch.equal(unaugmented, batches[0][0])


def test_training_policy_follows_the_settings(tiny_config: TrainConfig) -> None:
    assert training_policy(tiny_config) is None
    erasing_only = training_policy(tiny_config.replace(random_erasing=0.25))
    assert erasing_only is not None and erasing_only.seed == tiny_config.seed
    assert [type(s).__name__ for s in erasing_only.policy.steps] == ["RandomErasing"]
    both = training_policy(
        tiny_config.replace(augment="randaugment", randaugment_n=3, randaugment_m=5, seed=4)
    )
    (randaugment,) = both.policy.steps
    assert (randaugment.n, randaugment.m, both.seed) == (3, 5, 4)


def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sam_in_the_training_step(precision: str) -> None:
    """One SAM step with the runtime's autocast and memory format (channels_last, as CPU runs
    use): BatchNorm statistics as after a plain step (one update, at the unperturbed weights),
    weights unlike a plain step's, and the EMA averaging the stepped weights."""
    runtime = Runtime(CPU, precision, channels_last=True)
    layout = runtime.memory_format()
    images, labels = _images(16)
    x = _normalize()(images).contiguous(memory_format=layout)
    results = {}
    for use_sam in (False, True):
        model = _bn_net().to(memory_format=layout)
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        ema = Ema(model, 0.5)
        ema.update_parameters(model)
        torch.manual_seed(1)  # the same dropout mask in the first pass of both
        result = train_step(
            model, x, labels, SAM(sgd, 0.05) if use_sam else sgd, runtime, label_smoothing=0.1
        )
        ema.update_parameters(model)
        results[use_sam] = (model, result, ema)
    (plain, plain_result, _), (sam, sam_result, sam_ema) = results[False], results[True]
    assert torch.isfinite(sam_result.loss_sum) and sam_result.count == 16
    assert sam_result.loss_sum.item() == pytest.approx(plain_result.loss_sum.item(), rel=1e-6)
    assert torch.equal(plain[1].running_mean, sam[1].running_mean)
    assert torch.equal(plain[1].running_var, sam[1].running_var)
    assert int(sam[1].num_batches_tracked) == 1
    assert not torch.allclose(plain[0].weight, sam[0].weight)
    averaged = sam_ema.module[0].weight
    assert not torch.equal(averaged, sam[0].weight)  # half-way between the start and the step
    assert sam[0].weight.is_contiguous(memory_format=layout)


def test_sam_refuses_fp16() -> None:
    check_sam_precision("bf16")
    with pytest.raises(ConfigError, match="fp16"):
        check_sam_precision("fp16")


def test_sam_at_fp16_is_refused_before_the_data_is_loaded(
    tiny_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cifarnet.training.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "resolve_runtime", lambda *_: Runtime(CPU, "fp16", False))
    config = tiny_config.replace(sam=0.05, data_dir=str(tmp_path / "no-data"))
    with pytest.raises(ConfigError, match="--sam does not work with fp16"):
        train(config)
    assert not Path(config.runs_dir).exists() or not any(Path(config.runs_dir).iterdir())


def test_a_run_with_policies_and_sam_writes_its_settings(tiny_config: TrainConfig) -> None:
    config = tiny_config.replace(
        epochs=1, augment="autoaugment", random_erasing=0.25, sam=0.5, sam_adaptive=True
    )
    summary = train(config)
    run = Path(summary["run_dir"])
    saved = load_checkpoint(run / "last.pt")["train_config"]
    assert (saved["augment"], saved["random_erasing"], saved["sam"], saved["sam_adaptive"]) == (
        "autoaugment",
        0.25,
        0.5,
        True,
    )
    assert pd.read_csv(run / "metrics.csv")["train_loss"].notna().all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--augment", "trivialaugmnet"], "did you mean 'trivialaugment'?"),
        (["--augment", "cutmix"], "choose one of: none, autoaugment, randaugment, trivialaugment"),
        (["--model", "resnet65"], "did you mean 'resnet56'?"),
        (["--random-erasing", "1.5"], "--random-erasing must be in [0, 1]"),
        (["--randaugment-n", "15"], "--randaugment-n must be an integer in 1..14"),
        (["--randaugment-m", "31"], "--randaugment-m must be an integer in 0..30"),
        (["--sam", "0"], "--sam must be a positive number"),
        (["--sam", "-0.05"], "--sam must be a positive number"),
        (["--sam-adaptive"], "--sam-adaptive needs --sam RHO"),
        (["--patience", "0"], "--patience must be a positive integer"),
        (["--patience", "5", "--val-size", "0"], "--patience stops on the validation top-1"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_data(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # the data folder does not exist: reaching the data would fail with another message
    missing = tmp_path / "no-data"
    argv = ["train", *args, "--data-dir", str(missing), "--no-download", "--device", "cpu"]
    result = runner.invoke(app, [*argv, "--runs-dir", str(tmp_path / "runs")])
    line = one_line_failure(result)
    assert message in line, line
    assert not (tmp_path / "runs").exists()


def test_a_policy_refuses_images_it_cannot_serve() -> None:
    with pytest.raises(ConfigError, match="needs images of at least 32x32 pixels, got 16x16"):
        make_policy("trivialaugment", image_size=16)
    with pytest.raises(ConfigError, match="random erasing needs images of at least 8x8"):
        make_policy("none", erasing=0.25, image_size=4)


NEW_SETTINGS = (
    "augment",
    "randaugment_n",
    "randaugment_m",
    "random_erasing",
    "sam",
    "sam_adaptive",
    "patience",
)


def test_a_checkpoint_from_before_these_settings_loads_evaluates_and_resumes(
    tmp_path_factory: pytest.TempPathFactory, cifar100_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from cifarnet.tasks.evaluation import evaluate

    run = tmp_path / "old"
    shutil.copytree(trained_run(tmp_path_factory, cifar100_dir), run)
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(run / name)
        for key in NEW_SETTINGS:
            del ckpt["train_config"][key]  # as written before they existed
        torch.save(ckpt, run / name)
    for name in ("best.pt", "last.pt"):
        result = evaluate(run / name, device="cpu", precision="fp32", download=False)
        assert result.images == 200
    summary = train(resume=run / "last.pt", overrides={"epochs": 2, "patience": 1})
    assert summary["epochs"] == 2
    resumed = load_checkpoint(run / "last.pt")["train_config"]
    assert (resumed["augment"], resumed["sam"], resumed["patience"]) == ("none", None, 1)
