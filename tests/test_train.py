"""Training runs on tiny data: the run folder and its files, resume, seeding, variants."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from tiny_run import RUN_FILES

import cifarnet
from cifarnet.config.settings import TrainConfig
from cifarnet.errors import ConfigError
from cifarnet.io.checkpoint import FORMAT, load_checkpoint
from cifarnet.io.metrics_log import COLUMNS
from cifarnet.training.trainer import TrainCallbacks, train

DESIGN_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "epoch_seconds",
    "images_per_second",
]


class Recorder(TrainCallbacks):
    def __init__(self) -> None:
        self.info: dict = {}
        self.epochs: list[int] = []
        self.steps = 0

    def on_start(self, info: dict) -> None:
        self.info = info

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.epochs.append(epoch)

    def on_step(self, step: int, steps: int, stats: dict) -> None:
        self.steps += 1


def test_tiny_run_writes_every_run_file(tiny_config: TrainConfig) -> None:
    rec = Recorder()
    summary = train(tiny_config, callbacks=rec)
    run = Path(summary["run_dir"])
    assert run == Path(tiny_config.runs_dir) / "train"
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    # 400 images - 100 held out for validation = 300, in batches of 64: 5 steps per epoch
    assert rec.info["train_images"] == 300 and rec.info["val_images"] == 100
    assert rec.epochs == [1, 2] and rec.steps == 10

    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == COLUMNS and set(DESIGN_COLUMNS) <= set(COLUMNS)
    assert metrics["epoch"].tolist() == [1, 2]
    assert metrics["train_images"].tolist() == [300, 300]
    for col in ("train_top1", "val_top1", "val_top5"):
        assert metrics[col].between(0, 100).all()
    assert (metrics["val_top5"] >= metrics["val_top1"]).all()
    # default recipe: warm-up (at most a fifth of the run), then cosine decay to exactly 0
    assert metrics["lr"].iloc[0] > 0 and metrics["lr"].iloc[-1] == 0
    assert (metrics["epoch_seconds"] > 0).all()

    saved = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == tiny_config  # a valid --config that reruns it
    assert saved["_meta"]["torch"] == str(torch.__version__)
    assert saved["_meta"]["train_images"] == 300 and saved["_meta"]["parameters"] > 0

    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["format"] == best["format"] == FORMAT
    assert (last["kind"], best["kind"]) == ("last", "best")
    assert last["progress"]["epoch"] == 2 and len(last["history"]) == 2
    optional = ("scheduler", "scaler", "ema_state_dict", "lookahead_state")
    assert {"optimizer", "rng", *optional} <= set(last)
    # this run has none of the optional ones: a cosine schedule computed from the step, fp32,
    # no EMA, no lookahead
    assert all(last[name] is None for name in optional)
    assert last["optimizer"]["state"] and set(last["rng"]) == {"torch", "cuda", "data"}
    assert best["progress"]["epoch"] == summary["best_epoch"]
    assert best["data"]["classes"][0] == "class_00" and len(best["data"]["superclasses"]) == 20
    assert best["data"]["mean"] == [0.507, 0.487, 0.441]
    assert best["train_config"] == tiny_config.to_dict()

    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 100
    assert summary["epochs"] == 2 and summary["parameters"] == saved["_meta"]["parameters"]
    assert (run / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _short(tiny_config: TrainConfig, **changes: object) -> TrainConfig:
    """64 training images in batches of 32 (2 steps per epoch), 20 for validation."""
    return tiny_config.replace(**{"subset": 64, "batch_size": 32, "val_size": 20, **changes})


def test_resume_continues_at_the_next_epoch(tiny_config: TrainConfig) -> None:
    config = _short(tiny_config, epochs=1)
    run = Path(train(config)["run_dir"])
    first_row = pd.read_csv(run / "metrics.csv").iloc[0]
    rec = Recorder()
    summary = train(resume=run / "last.pt", overrides={"epochs": 2}, callbacks=rec)
    assert summary["run_dir"] == str(run)  # continued in place: no new run folder
    assert rec.info["start_epoch"] == 2 and rec.epochs == [2]
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    pd.testing.assert_series_equal(metrics.iloc[0], first_row)
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 2
    assert sorted(p.name for p in Path(config.runs_dir).iterdir()) == ["train"]


def test_resume_of_a_run_saved_before_decay_norm_and_bias_existed(
    tiny_config: TrainConfig,
) -> None:
    config = _short(tiny_config, recipe="reference", decay_norm_and_bias=True, epochs=1)
    run = Path(train(config)["run_dir"])
    ckpt = load_checkpoint(run / "last.pt")
    del ckpt["train_config"]["decay_norm_and_bias"]  # as written by earlier versions
    assert len(ckpt["optimizer"]["param_groups"]) == 1
    torch.save(ckpt, run / "last.pt")
    train(resume=run / "last.pt", overrides={"epochs": 2})
    assert load_checkpoint(run / "last.pt")["train_config"]["decay_norm_and_bias"] is True


def test_optimizer_groups_follow_decay_norm_and_bias(tiny_config: TrainConfig) -> None:
    from cifarnet.models import create_model
    from cifarnet.training.optim import build_optimizer

    model = create_model(tiny_config.model, 100, **tiny_config.model_kwargs)
    one_d = sum(p.numel() for p in model.parameters() if p.ndim <= 1)

    def groups(**changes: object) -> list[tuple[int, float, float]]:
        opt = build_optimizer(model, tiny_config.replace(weight_decay=0.1, **changes))
        return [
            (sum(p.numel() for p in g["params"]), g["weight_decay"], g["lr_scale"])
            for g in opt.param_groups
        ]

    total = sum(p.numel() for p in model.parameters())
    assert groups(decay_norm_and_bias=True) == [(total, 0.1, 1.0)]  # the write-up's SGD call
    assert groups(decay_norm_and_bias=False) == [(total - one_d, 0.1, 1.0), (one_d, 0.0, 1.0)]
    assert groups(decay_norm_and_bias=True, bias_lr_scale=8.0) == [
        (total - one_d, 0.1, 1.0),
        (one_d, 0.1, 8.0),
    ]


class LrLog(TrainCallbacks):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_step(self, step: int, steps: int, stats: dict) -> None:
        self.lrs.append(stats["lr"])


def _plateau(tiny_config: TrainConfig, **changes: object) -> TrainConfig:
    """The plateau schedule with a 4x lr on BatchNorm and biases: 2 steps per epoch."""
    return _short(
        tiny_config,
        **{"schedule": "plateau", "lr": 0.1, "bias_lr_scale": 4.0, "decay_norm_and_bias": False}
        | changes,
    )


def _group_lrs(run: Path) -> list[float]:
    return [g["lr"] for g in load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]]


def test_plateau_schedule_warms_up_and_scales_the_bias_lr(tiny_config: TrainConfig) -> None:
    log = LrLog()
    # warm-up: the first 20% of the 10 steps, then the peak until a plateau (patience 10)
    run = Path(train(_plateau(tiny_config, epochs=5, warmup_epochs=1.0), callbacks=log)["run_dir"])
    assert log.lrs == pytest.approx([0.0, 0.05] + [0.1] * 8)
    assert _group_lrs(run) == pytest.approx([0.1, 0.4])


def test_plateau_run_stopped_during_warm_up_resumes_to_the_peak_lr(
    tiny_config: TrainConfig,
) -> None:
    import signal

    from cifarnet.errors import TrainingInterrupted

    class CtrlCAfterFirstStep(TrainCallbacks):
        def on_step(self, step: int, steps: int, stats: dict) -> None:
            if step == 1:
                signal.raise_signal(signal.SIGINT)  # handled by the trainer: saves last.pt

    config = _plateau(tiny_config, epochs=5, warmup_epochs=1.0)
    with pytest.raises(TrainingInterrupted):
        train(config, callbacks=CtrlCAfterFirstStep())
    log = LrLog()
    train(resume=Path(config.runs_dir) / "train" / "last.pt", callbacks=log)
    # the rest of the warm-up, then the peak: the warm-up lr saved mid-epoch is not a cut
    assert log.lrs == pytest.approx([0.05] + [0.1] * 8)
    assert _group_lrs(Path(config.runs_dir) / "train") == pytest.approx([0.1, 0.4])


def test_plateau_schedule_with_frozen_norm_and_bias_lr(tiny_config: TrainConfig) -> None:
    run = Path(train(_plateau(tiny_config, epochs=2, bias_lr_scale=0.0))["run_dir"])
    assert _group_lrs(run) == pytest.approx([0.1, 0.0])


def test_plateau_cut_of_an_older_checkpoint_survives_resume(tiny_config: TrainConfig) -> None:
    run = Path(train(_plateau(tiny_config, epochs=1, warmup_epochs=0.0))["run_dir"])
    ckpt = load_checkpoint(run / "last.pt")
    for group in ckpt["optimizer"]["param_groups"]:
        del group["plateau_factor"]  # written before it existed: the cut lives in "lr" alone
        group["lr"] *= 0.1
    torch.save(ckpt, run / "last.pt")
    log = LrLog()
    train(resume=run / "last.pt", overrides={"epochs": 2}, callbacks=log)
    assert log.lrs == pytest.approx([0.01, 0.01])
    assert _group_lrs(run) == pytest.approx([0.01, 0.04])


def test_fastnet_run_resumes_with_its_stem_frozen(tiny_config: TrainConfig) -> None:
    config = _short(
        tiny_config,
        model="fastnet",
        model_kwargs={"widths": [8, 16, 16]},
        bias_lr_scale=64.0,
        decay_norm_and_bias=False,
        epochs=1,
    )
    run = Path(train(config)["run_dir"])
    stem = load_checkpoint(run / "last.pt")["state_dict"]["whiten.weight"]
    train(resume=run / "last.pt", overrides={"epochs": 2})
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1, 2]
    assert torch.equal(load_checkpoint(run / "last.pt")["state_dict"]["whiten.weight"], stem)


def test_subset_larger_than_the_training_split_is_refused(tiny_config: TrainConfig) -> None:
    with pytest.raises(ConfigError, match="--subset 100000 is more than the"):
        train(_short(tiny_config, subset=100_000))
    assert not Path(tiny_config.runs_dir).exists()


def test_a_relative_data_dir_is_stored_absolute(
    tiny_config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = Path(tiny_config.data_dir)
    monkeypatch.chdir(data_dir.parent)
    run = Path(train(_short(tiny_config, epochs=1, data_dir=data_dir.name))["run_dir"])
    assert load_checkpoint(run / "best.pt")["train_config"]["data_dir"] == str(data_dir)
    assert json.loads((run / "config.json").read_text())["data_dir"] == str(data_dir)


def test_runs_never_overwrite_each_other(tiny_config: TrainConfig) -> None:
    config = tiny_config.replace(epochs=1, subset=32, batch_size=32, val_size=20, name="same")
    first = Path(train(config)["run_dir"])
    before = (first / "last.pt").read_bytes()
    second = Path(train(config)["run_dir"])
    assert (first.name, second.name) == ("same", "same-2")
    assert (first / "last.pt").read_bytes() == before


def test_seed_alone_decides_the_weights(tiny_config: TrainConfig) -> None:
    def weights(seed: int, name: str) -> dict:
        config = tiny_config.replace(
            epochs=1, subset=32, batch_size=32, val_size=20, seed=seed, name=name
        )
        run = Path(train(config)["run_dir"])
        return load_checkpoint(run / "last.pt")["state_dict"]

    a, b, c = weights(5, "a"), weights(5, "b"), weights(6, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_zero_init_residual_follows_the_config(tiny_config: TrainConfig) -> None:
    from cifarnet.training.trainer import Trainer

    for zero_init in (True, False):
        trainer = Trainer(tiny_config.replace(zero_init_residual=zero_init), TrainCallbacks())
        bn2 = trainer.model.conv2_x[0].bn2.weight
        assert bool(torch.all(bn2 == 0)) is zero_init


def test_no_validation_split_keeps_the_last_epoch(tiny_config: TrainConfig) -> None:
    config = tiny_config.replace(epochs=2, subset=32, batch_size=32, val_size=0)
    summary = train(config)
    run = Path(summary["run_dir"])
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["val_top1"].isna().all()
    assert summary["best_epoch"] == 2 and summary["best_val_top1"] is None
    assert load_checkpoint(run / "best.pt")["progress"]["epoch"] == 2


def test_cifar10_through_the_public_api(cifar10_dir: Path, tmp_path: Path) -> None:
    config = cifarnet.TrainConfig(
        dataset="cifar10",
        data_dir=str(cifar10_dir),
        model="resnet",
        model_kwargs={"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1]},
        epochs=1,
        batch_size=32,
        val_size=10,
        runs_dir=str(tmp_path / "runs"),
        device="cpu",
        precision="fp32",
        download=False,
    )
    summary = cifarnet.train(config)
    best = load_checkpoint(Path(summary["run_dir"]) / "best.pt")
    assert best["model"]["num_classes"] == 10 and best["data"]["dataset"] == "cifar10"
    assert best["state_dict"]["fc_layer.weight"].shape == (10, 16)
    assert best["data"]["superclasses"] is None


def test_plot_of_one_epoch_without_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from cifarnet.io.plots import plot_history

    figures = []
    savefig = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        figures.append(fig)  # to look at it
        savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # the caller's choice, e.g. a notebook's: plotting must not change it
    try:
        nan = float("nan")
        row = {"epoch": 1, "train_loss": 4.2, "train_top1": 3.0}
        plot_history(
            [{**row, "val_loss": nan, "val_top1": nan, "val_top5": nan}], tmp_path / "r.png"
        )
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend)
    assert plt.get_fignums() == []  # nothing left open in pyplot
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss, accuracy = figures[0].axes
    assert [line.get_label() for line in loss.get_lines()] == ["train"]  # no empty val lines
    assert [line.get_label() for line in accuracy.get_lines()] == ["train top-1"]
    assert loss.get_lines()[0].get_marker() == "o"  # a single point is still drawn
