"""One training run: run folder, data, model, optimisation loop, checkpoints, metrics, resume.

`train(config)` is the library entry point; the CLI only parses flags and renders callbacks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarnet.config.settings import TrainConfig, flag_name, resolve_config
from cifarnet.data.augment import Augment, Normalize, resize_batch, training_resolution
from cifarnet.data.datasets import get_spec, load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.data.mixing import BatchMix
from cifarnet.data.splits import balanced_subset, stratified_split
from cifarnet.errors import (
    Aborted,
    CheckpointError,
    ConfigError,
    DivergenceError,
    OutputError,
    TrainingInterrupted,
    one_line,
)
from cifarnet.io.atomic import atomic_write
from cifarnet.io.checkpoint import load_checkpoint, save_checkpoint, versions
from cifarnet.io.metrics_log import MetricsLog
from cifarnet.models import count_parameters, create_model, model_config
from cifarnet.models.resnet import zero_init_residual
from cifarnet.runtime.device import (
    Runtime,
    out_of_memory_as,
    resolve_runtime,
    seed_everything,
)
from cifarnet.training.schedule import lr_factor
from cifarnet.training.step import EvalResult, evaluate, train_step

MAX_WARMUP_FRACTION = 0.2
# a closed output stops a run as this signal would (Windows has no SIGPIPE: the number is the
# one Unix shells report, as exit code 128 + 13)
SIGPIPE = getattr(signal, "SIGPIPE", 13)
# What a resumed run keeps: the saved weights and optimizer state are bound to the network, and
# the validation split (and the subset trained on) to the data the run has already seen; its
# step counters count batches of its batch size (the schedule's position and a mid-epoch restart
# point are read from them); its recipe name labels the values it started from.
FIXED_ON_RESUME = (
    "recipe",
    "dataset",
    "model",
    "model_kwargs",
    "val_size",
    "seed",
    "subset",
    "batch_size",
)


class TrainCallbacks:
    """Hooks for progress display. The library calls them; it never prints."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int) -> None: ...

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None: ...

    def on_epoch_end(self, row: dict[str, Any]) -> None: ...

    def on_status(self, message: str) -> None: ...

    def on_end(self, summary: dict[str, Any]) -> None: ...


@dataclass
class RunPaths:
    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.csv"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def plot(self) -> Path:
        return self.folder / "results.png"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"


def new_run_folder(runs_dir: str | os.PathLike, name: str) -> Path:
    """runs_dir/name, or name-2, name-3, ... : an existing run is never overwritten."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(1, 10_000):
            folder = root / (name if i == 1 else f"{name}-{i}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
    except OSError as exc:
        raise OutputError(f"cannot create a run folder in {root}: {exc.strerror or exc}") from None
    raise OutputError(f"too many runs named {name!r} in {root}; pass --name")


@dataclass
class Progress:
    """Where the run stands; saved in last.pt so that a resume continues exactly."""

    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # > 0 only for a checkpoint saved mid-epoch (after an interrupt)
    global_step: int = 0
    elapsed_seconds: float = 0.0  # wall time of the training loop so far (the --time budget)
    best_val_top1: float = -1.0
    best_epoch: int = 0
    partial: dict[str, float] = field(default_factory=dict)  # running sums of an unfinished epoch
    # wall time of the last epoch's ending (validation, checkpoints): with --time it is held
    # back from the steps' share of the budget, so that the whole run ends inside the budget
    epoch_end_seconds: float = 0.0
    last_step_seconds: float = 0.0  # wall time of the last step: --time predicts the next's

    def step_budget_seconds(self, time_minutes: float) -> float:
        """The seconds of a --time budget left to the steps: the budget less what ending the
        final epoch takes (validation, checkpoints), but never less than half of it."""
        budget = time_minutes * 60
        return max(budget - self.epoch_end_seconds, 0.5 * budget)

    def budget_spent(self, time_minutes: float) -> bool:
        """With --time: whether the next step would end past the steps' share of the budget
        (steps take about the same time)."""
        next_end = self.elapsed_seconds + self.last_step_seconds
        return next_end >= self.step_budget_seconds(time_minutes)


class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop at the next safe point; a second
    one aborts at once (the last saved last.pt stays intact: saves are atomic)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_number is not None:
            raise Aborted(signum)
        self.signal_number = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _OutputGuard(TrainCallbacks):
    """The caller's callbacks, but a closed output (`cifarnet train | head`: a write raises
    BrokenPipeError) does not kill the run with its work unsaved: the callbacks fall silent and
    the run stops at the next safe point as if signalled SIGPIPE, saving last.pt."""

    def __init__(self, inner: TrainCallbacks, stop: _StopFlag) -> None:
        self._inner, self._stop, self._lost = inner, stop, False

    def _call(self, name: str, *args: Any) -> None:
        if self._lost:
            return
        try:
            getattr(self._inner, name)(*args)
        except BrokenPipeError:
            self._lost = True
            if self._stop.signal_number is None:
                self._stop.signal_number = SIGPIPE

    def on_start(self, info: dict[str, Any]) -> None:
        self._call("on_start", info)

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self._call("on_epoch_start", epoch, steps)

    def on_step(self, step: int, steps: int, stats: dict[str, float]) -> None:
        self._call("on_step", step, steps, stats)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self._call("on_epoch_end", row)

    def on_status(self, message: str) -> None:
        self._call("on_status", message)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._call("on_end", summary)


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    callbacks: TrainCallbacks | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Train a model and return the run's summary (also written to summary.json).

    Either a resolved `config`, or settings as keywords, resolved like the CLI's flags (the
    recipe's values, then these): `train(recipe="fast", time_minutes=10, data_dir="data")`.
    `resume`: a last.pt to continue; its config is used, updated by `overrides` (e.g.
    {"epochs": 100} to extend the run).
    """
    callbacks = callbacks or TrainCallbacks()
    if resume is not None and config is not None:
        raise TypeError("a resumed run uses its own config: pass overrides, not a TrainConfig")
    if resume is not None:
        return Trainer.resume(resume, {**settings, **(overrides or {})}, callbacks).run()
    if config is None:
        config = resolve_config(settings)
    elif settings:
        raise TypeError("pass either a TrainConfig or settings as keywords, not both")
    if overrides:
        config = config.replace(**overrides)
    return Trainer(config, callbacks).run()


def _check_there_is_more_to_train(
    path: str | os.PathLike, config: TrainConfig, progress: Progress, overrides: dict[str, Any]
) -> None:
    """Refuse a resume that would end at once: it would train nothing and yet rewrite the run's
    config.json and summary with settings that never ran. A run saved mid-epoch may always
    finish that epoch."""
    if progress.step_in_epoch:
        return
    done = progress.epoch
    if config.time_minutes is None:
        if done >= config.epochs:
            raise ConfigError(
                f"{path}: the run already completed {done} of {config.epochs} epochs; "
                f"pass --epochs N (N > {done}) to train further"
            )
        return
    if progress.budget_spent(config.time_minutes):  # a --time run's length is its budget
        used = progress.elapsed_seconds / 60
        # the smallest budget whose steps' share (Progress.step_budget_seconds) fits another step
        next_end = progress.elapsed_seconds + progress.last_step_seconds
        needed = min(next_end + progress.epoch_end_seconds, 2 * next_end) / 60
        hint = " (--epochs does not lengthen a --time run)" if "epochs" in overrides else ""
        raise ConfigError(
            f"{path}: the run already used {used:.2f} of its {config.time_minutes:g} minutes"
            f"{hint}; pass --time M (M > {math.ceil(needed * 1000) / 1000:.3f}) to train further"
        )


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        callbacks: TrainCallbacks,
        folder: Path | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> None:
        if config.data_dir is not None:
            # stored absolute, so `evaluate` finds the run's data from any folder
            config = config.replace(data_dir=os.path.abspath(os.path.expanduser(config.data_dir)))
        self.config = config
        self.stop = _StopFlag()
        self.callbacks = _OutputGuard(callbacks, self.stop)
        # fail on a bad model name or kwargs before loading data or creating folders; seeded
        # first, so that the initial weights depend on --seed alone
        self.num_classes = get_spec(config.dataset).num_classes
        seed_everything(config.seed, config.deterministic)
        self.model = create_model(config.model, self.num_classes, **config.model_kwargs)
        if config.zero_init_residual:
            zero_init_residual(self.model)
        self.runtime: Runtime = resolve_runtime(config.device, config.precision)
        self._folder = folder
        self._checkpoint = checkpoint
        self._resume_path: Path | None = None

    @classmethod
    def resume(
        cls, path: str | os.PathLike, overrides: dict[str, Any], callbacks: TrainCallbacks
    ) -> Trainer:
        """A trainer that continues the run of `path` (a last.pt) with `overrides` applied;
        settings in FIXED_ON_RESUME cannot change."""
        if Path(path).is_dir():
            raise CheckpointError(
                f"{path} is a folder; resume from the run's last.pt ({Path(path) / 'last.pt'})"
            )
        ckpt = load_checkpoint(path)
        if ckpt.get("kind") != "last":
            raise CheckpointError(
                f"{path} is not a last.pt (it has no optimizer state); "
                "resume from the run's last.pt"
            )
        try:
            saved = ckpt["train_config"]
            # a run saved before this setting existed decayed every parameter exactly when its
            # recipe was "reference", and its optimizer state has the parameter groups to match
            legacy = {"decay_norm_and_bias": saved.get("recipe") == "reference"}
            values = {**legacy, **saved, **overrides}
            progress = Progress(**ckpt["progress"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path} lacks its training state ({exc}); damaged") from None
        for name in FIXED_ON_RESUME:
            if name in overrides and overrides[name] != saved.get(name):
                raise ConfigError(
                    f"{flag_name(name)} cannot change when resuming ({path} was "
                    f"started with {saved.get(name)!r}); start a new run instead"
                )
        config = TrainConfig.from_dict(values, source=str(path))
        _check_there_is_more_to_train(path, config, progress, overrides)
        trainer = cls(config, callbacks, folder=Path(path).parent, checkpoint=ckpt)
        trainer._resume_path = Path(path)
        try:  # a mismatch fails here, before any data is loaded
            trainer.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path}: weights do not fit model {config.model!r} "
                f"(wrong architecture: {one_line(exc)})"
            ) from None
        return trainer

    def _prepare_data(self) -> None:
        c, dev = self.config, self.runtime.device
        self.callbacks.on_status(f"loading {c.dataset}")
        data = load_dataset(c.dataset, c.data_dir, download=c.download)
        # where the data was found (--data-dir, $CIFARNET_DATA or the cache), stored absolute so
        # that `evaluate` of this run's checkpoints finds it again from anywhere
        self.data_source = os.path.abspath(data.source)
        self.data_info = {**data.info(), "source": self.data_source}
        train_idx, val_idx = stratified_split(data.train_labels, c.val_size, c.seed)
        if c.subset is not None:
            if c.subset > len(train_idx):
                raise ConfigError(
                    f"--subset {c.subset} is more than the {len(train_idx):,} training images "
                    f"({c.dataset} less the {len(val_idx):,} held out by --val-size)"
                )
            train_idx = balanced_subset(data.train_labels, train_idx, c.subset, c.seed)
        normalize = Normalize(data.spec.mean, data.spec.std, dev, self.runtime.channels_last)
        self.normalize = normalize
        augment = Augment(c.crop_padding, c.flip, c.cutout)
        self.mix = BatchMix(c.mixup, c.cutmix)
        # moved once to the device as uint8; batches are cut, augmented and normalised there
        self.train_loader = BatchLoader(
            data.train_images[train_idx].to(dev),
            data.train_labels[train_idx].to(dev),
            c.batch_size,
            normalize,
            augment,
            shuffle=True,
        )
        self.val_loader = (
            BatchLoader(
                data.train_images[val_idx].to(dev),
                data.train_labels[val_idx].to(dev),
                c.eval_batch_size,
                normalize,
            )
            if len(val_idx)
            else None
        )
        self.test_loader = BatchLoader(
            data.test_images.to(dev), data.test_labels.to(dev), c.eval_batch_size, normalize
        )
        self.train_count, self.val_count = len(train_idx), len(val_idx)

    def _prepare_model(self) -> None:
        c, rt = self.config, self.runtime
        # again: training's own draws (dropout, the whitening sample) then start from the seed,
        # however many the set-up since the model's initialisation made
        seed_everything(c.seed, c.deterministic)
        model = self.model
        if self._checkpoint is None and hasattr(model, "init_whitening"):
            sample = self.train_loader.images[: min(5000, len(self.train_loader.images))]
            model.init_whitening(self.normalize(sample))
        model.to(rt.device, memory_format=rt.memory_format())
        self.optimizer = build_optimizer(model, c)
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=0.1, patience=c.plateau_patience
            )
            if c.schedule == "plateau"
            else None
        )
        self.scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
        self.ema = (
            torch.optim.swa_utils.AveragedModel(
                model,
                multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(c.ema_decay),
                use_buffers=True,
            )
            if c.ema_decay > 0
            else None
        )
        use_compile = c.compile if c.compile is not None else rt.device.type == "cuda"
        self.compiled = use_compile
        self.forward_model = torch.compile(model) if use_compile else model
        self.eval_model = self.ema.module if self.ema is not None else model
        if self.ema is None:
            self.eval_forward = self.forward_model
        else:
            self.eval_forward = torch.compile(self.eval_model) if use_compile else self.eval_model

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            self._load_state(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{self._resume_path}: cannot resume from it with this configuration "
                f"({type(exc).__name__}: {one_line(exc)})"
            ) from None

    def _load_state(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.plateau is not None and ckpt.get("scheduler"):
            self.plateau.load_state_dict(ckpt["scheduler"])
            # checkpoints written before plateau_factor existed hold the cuts in "lr" alone
            groups = self.optimizer.param_groups
            factor = groups[0]["lr"] / ckpt["train_config"]["lr"]
            for group in groups:
                group.setdefault("plateau_factor", factor)
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema_state_dict"):
            self.ema.load_state_dict(ckpt["ema_state_dict"])
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng.get("cuda"):
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.progress = Progress(**ckpt["progress"])
        self.history = list(ckpt.get("history", []))
        self._resume_data_state = rng.get("data")

    def run(self) -> dict[str, Any]:
        """Train to the end (or the time budget, or a stop signal) and return the summary."""
        c = self.config
        self._prepare_data()
        self._prepare_model()
        self.progress, self.history = Progress(), []
        self._resume_data_state = None
        if self._checkpoint is not None:
            self._restore(self._checkpoint)
            self.paths = RunPaths(self._folder)
        else:
            self.paths = RunPaths(new_run_folder(c.runs_dir, c.name or "train"))
        self.metrics = MetricsLog(self.paths.metrics)
        self.metrics.rewrite(self.history)  # a resumed run's CSV matches its checkpoint exactly
        self._write_config()
        self.callbacks.on_start(self._start_info())
        with self.stop:
            try:
                while not self._finished():
                    self._run_epoch()
                if c.time_minutes is not None:
                    # last.pt was written before its own save was timed: again, with the
                    # progress this stop was decided on, so that `--resume` sees the same
                    self._save_last(None, None)
            except TrainingInterrupted:
                raise  # stopped by a signal: its plot is drawn, and a second Ctrl-C is live
            except Exception:
                # the curves of the epochs done, however the run failed (divergence, a full
                # disk, ...); best effort: the run's own error is the one to report.
                # (Not on a second Ctrl-C: that asks to stop at once.)
                with contextlib.suppress(Exception):
                    self._write_plot()
                raise
        return self._finish()

    def _finished(self) -> bool:
        if self.config.time_minutes is not None:
            return self.progress.budget_spent(self.config.time_minutes)
        return self.progress.epoch >= self.config.epochs

    def _progress_fraction(self, steps_per_epoch: int) -> float:
        c, p = self.config, self.progress
        if c.time_minutes is not None:
            return p.elapsed_seconds / p.step_budget_seconds(c.time_minutes)
        return p.global_step / (c.epochs * steps_per_epoch)

    def _set_lr(self, steps_per_epoch: int) -> float:
        """Set every group's lr for the coming step; returns the main group's."""
        c = self.config
        factor = lr_factor(
            c.schedule, self._progress_fraction(steps_per_epoch), self._warmup_fraction()
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self._peak_lr(group) * factor
        return self.optimizer.param_groups[0]["lr"]

    def _peak_lr(self, group: dict[str, Any]) -> float:
        """The group's lr before the schedule's factor: --lr times the group's scale, times the
        cuts the plateau schedule has made so far."""
        return self.config.lr * group["lr_scale"] * group.get("plateau_factor", 1.0)

    def _step_plateau(self, error: float) -> None:
        """ReduceLROnPlateau cuts each group's lr in place. It is shown the peak lrs (never a
        warm-up value), and its cut is kept as the group's plateau_factor, which the optimizer's
        state (and so every checkpoint) carries."""
        assert self.plateau is not None
        groups = self.optimizer.param_groups
        for group in groups:
            group["lr"] = self._peak_lr(group)
        self.plateau.step(error)
        # the cut is the same for every group; read it off the main one (lr_scale 1, while
        # bias_lr_scale may be 0)
        factor = groups[0]["lr"] / self.config.lr
        for group in groups:
            group["plateau_factor"] = factor

    def _warmup_fraction(self) -> float:
        """warmup_epochs as a share of the run, at most MAX_WARMUP_FRACTION: a short run (say 3
        epochs of a 2-epoch-warm-up recipe) must not spend most of itself warming up."""
        return min(self.config.warmup_epochs / self.config.epochs, MAX_WARMUP_FRACTION)

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.runtime.device)
        g.manual_seed(self.config.seed * 1_000_003 + epoch)
        return g

    def _run_epoch(self) -> None:
        c, p, rt = self.config, self.progress, self.runtime
        loader = self.train_loader
        steps = len(loader)
        epoch = p.epoch + 1
        generator = self._epoch_generator(epoch)
        start = p.step_in_epoch
        if start and self._resume_data_state is not None:
            generator.set_state(self._resume_data_state["generator"])
            order = self._resume_data_state["order"].to(rt.device)
        else:
            order = loader.epoch_order(generator)
        self._resume_data_state = None
        self.callbacks.on_epoch_start(epoch, steps)
        sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, **p.partial}
        loss_sum = torch.tensor(sums["loss_sum"], device=rt.device)
        correct = torch.tensor(sums["correct"], device=rt.device)
        count = int(sums["count"])
        train_seconds = sums["seconds"]
        sync_every = 1 if rt.device.type == "cpu" else 25
        self.forward_model.train()
        t_loop = time.perf_counter()
        for step, (x, y) in enumerate(loader.batches(generator, order, start), start=start + 1):
            lr = self._set_lr(steps)
            if c.resize_from < 32:
                x = resize_batch(
                    x, training_resolution(c.resize_from, self._progress_fraction(steps))
                )
            if self.mix.enabled:
                x, y = self.mix(x, y, self.num_classes, (c.seed, epoch, step))
            with out_of_memory_as(
                f"out of memory on {rt.device} at batch size {c.batch_size}; "
                "try a smaller --batch-size"
            ):
                result = train_step(
                    self.forward_model, x, y, self.optimizer, rt, c.label_smoothing, self.scaler
                )
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            loss_sum += result.loss_sum
            correct += result.correct
            count += result.count
            p.global_step += 1
            now = time.perf_counter()
            p.last_step_seconds = now - t_loop
            p.elapsed_seconds += now - t_loop
            train_seconds += now - t_loop
            t_loop = now
            if step % sync_every == 0 or step == steps:
                loss_value = loss_sum.item()
                if not math.isfinite(loss_value):
                    raise self._diverged(f"loss is {loss_value} at epoch {epoch}, step {step}", lr)
                self.callbacks.on_step(
                    step,
                    steps,
                    {
                        "loss": loss_value / count,
                        "top1": 100.0 * correct.item() / count,
                        "lr": lr,
                        "images_per_second": count / max(train_seconds, 1e-9),
                        "elapsed_seconds": p.elapsed_seconds,
                    },
                )
            if self.stop.signal_number is not None and step < steps:
                self._check_weights(f"epoch {epoch}, step {step}", lr)
                p.step_in_epoch = step
                p.partial = {
                    "loss_sum": loss_sum.item(),
                    "correct": correct.item(),
                    "count": float(count),
                    "seconds": train_seconds,
                }
                self._interrupt(generator, order)
            if self._finished():
                break
        lr = self._set_lr(steps)
        train_stats = (loss_sum.item() / max(count, 1), 100.0 * correct.item() / max(count, 1))
        self._check_weights(f"the end of epoch {epoch}", lr)
        self._end_epoch(epoch, count, train_seconds, train_stats, lr)
        stop = self.stop.signal_number
        # a closed output after the last epoch loses nothing: the run ends as usual, silently
        if stop is not None and not (stop == SIGPIPE and self._finished()):
            self._interrupt(None, None)

    def _end_epoch(
        self,
        epoch: int,
        count: int,
        train_seconds: float,
        train_stats: tuple[float, float],
        lr: float,
    ) -> None:
        p = self.progress
        t0 = time.perf_counter()
        val = self._evaluate(self.val_loader) if self.val_loader is not None else None
        if self.plateau is not None:
            # the write-up divides the lr by 10 when validation error stops improving;
            # without a validation split the training loss is watched instead
            self._step_plateau(100.0 - val.top1 if val is not None else train_stats[0])
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_stats[0],
            "train_top1": train_stats[1],
            "val_loss": val.loss if val else float("nan"),
            "val_top1": val.top1 if val else float("nan"),
            "val_top5": val.top5 if val else float("nan"),
            "train_images": count,
            "epoch_seconds": train_seconds + (time.perf_counter() - t0),
            "images_per_second": count / max(train_seconds, 1e-9),
        }
        p.epoch, p.step_in_epoch, p.partial = epoch, 0, {}
        improved = val is None or val.top1 > p.best_val_top1
        if improved:
            p.best_val_top1 = val.top1 if val is not None else float("nan")
            p.best_epoch = epoch
        validation = time.perf_counter() - t0
        p.elapsed_seconds += validation
        # what last.pt records for a resumed --time run to reserve for its final epoch's end:
        # this epoch's validation; the save's own seconds are known only after it
        p.epoch_end_seconds = validation
        row["elapsed_seconds"] = p.elapsed_seconds
        self.history.append(row)
        t_save = time.perf_counter()
        # best.pt first, then last.pt (it carries the history), then the CSV row. After a crash
        # at any point, resuming redoes the epoch last.pt has not recorded (re-saving best.pt)
        # and rewrites metrics.csv from last.pt, so rows are never lost or doubled. (last.pt
        # first could record a best epoch whose weights never reached best.pt.)
        if improved:
            self._save_best()
        self._save_last(None, None)
        saving = time.perf_counter() - t_save
        p.elapsed_seconds += saving
        p.epoch_end_seconds = time.perf_counter() - t0
        try:
            self.metrics.append(row)
        except OSError as exc:
            raise OutputError(
                f"could not append epoch {epoch} to {self.paths.metrics}: "
                f"{exc.strerror or exc}; last.pt holds every row, and resuming from it "
                "rewrites the file"
            ) from None
        self.callbacks.on_epoch_end(row)

    def _evaluate(self, loader: BatchLoader) -> EvalResult:
        with out_of_memory_as(
            f"out of memory on {self.runtime.device} while evaluating batches of "
            f"{loader.batch_size}; set a smaller eval_batch_size in a --config file"
        ):
            return evaluate(self.eval_forward, loader.batches(), self.runtime)

    def _check_weights(self, where: str, lr: float) -> None:
        """An update can overflow the weights while the loss that drove it was still finite:
        never let such weights reach best.pt or last.pt."""
        finite = [
            v.isfinite().all() for v in self.model.state_dict().values() if v.is_floating_point()
        ]
        if not torch.stack(finite).all():
            raise self._diverged(f"the weights hold NaN/Inf at {where}", lr)

    def _diverged(self, what: str, lr: float) -> DivergenceError:
        p = self.progress
        kept = (
            f"last.pt keeps the weights of epoch {p.epoch}, best.pt of epoch {p.best_epoch}"
            if p.epoch
            else "no checkpoint was saved yet"
        )
        return DivergenceError(
            f"training diverged: {what} (lr {lr:.4g}); try a lower --lr or --precision fp32. "
            + kept
        )

    def _base_payload(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {
            "model": model_config(self.config.model, self.num_classes, self.config.model_kwargs),
            "state_dict": state_dict,
            "data": self.data_info,
            "train_config": self.config.to_dict(),
            "progress": self.progress.__dict__.copy(),
        }

    def _eval_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.eval_model.state_dict().items()}

    def _save_best(self) -> None:
        save_checkpoint(
            {**self._base_payload(self._eval_state_dict()), "kind": "best"}, self.paths.best
        )

    def _save_last(self, generator: torch.Generator | None, order: torch.Tensor | None) -> None:
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        payload = {
            **self._base_payload(state),
            "kind": "last",
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.plateau.state_dict() if self.plateau is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema_state_dict": self.ema.state_dict() if self.ema is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "data": {"generator": generator.get_state(), "order": order.cpu()}
                if generator is not None and order is not None
                else None,
            },
            "history": self.history,
        }
        save_checkpoint(payload, self.paths.last)

    def _interrupt(self, generator: torch.Generator | None, order: torch.Tensor | None) -> None:
        signum = self.stop.signal_number or signal.SIGINT
        self._save_last(generator, order)
        self._write_plot()
        if signum == SIGPIPE:
            name = "SIGPIPE (its output was closed)"
        else:
            name = signal.Signals(signum).name
        if generator is None and self._finished():
            # nothing is left to resume: `--resume` would only say the run is complete
            message = (
                f"stopped by {name} after the last epoch ({self.progress.epoch}); best.pt and "
                "last.pt are complete, the test-set evaluation was skipped. Run it with: "
                f"cifarnet evaluate {shlex.quote(str(self.paths.best))}"
            )
        else:
            message = (
                f"stopped by {name} at epoch {self.progress.epoch + (1 if generator else 0)}"
                f"{f', step {self.progress.step_in_epoch}' if generator else ''}; saved "
                f"{self.paths.last}. Resume with: cifarnet train --resume "
                f"{shlex.quote(str(self.paths.last))}"
            )
        raise TrainingInterrupted(message, signum, str(self.paths.last))

    def _write_config(self) -> None:
        rt = self.runtime
        payload = {
            **self.config.to_dict(),
            "_meta": {
                **versions(),
                "command": shlex.join(sys.argv),
                "device": str(rt.device),
                "precision": rt.precision,
                "channels_last": rt.channels_last,
                "compile": self.compiled,
                "data_source": self.data_source,
                "train_images": self.train_count,
                "val_images": self.val_count,
                "parameters": count_parameters(self.model),
            },
        }
        text = json.dumps(payload, indent=2) + "\n"
        atomic_write(self.paths.config, lambda f: f.write(text.encode()))

    def _write_plot(self) -> None:
        from cifarnet.io.plots import plot_history

        if self.history:
            plot_history(self.history, self.paths.plot)

    def _start_info(self) -> dict[str, Any]:
        rt = self.runtime
        return {
            "run_dir": str(self.paths.folder),
            "model": self.config.model,
            "parameters": count_parameters(self.model),
            "device": str(rt.device),
            "precision": rt.precision,
            "channels_last": rt.channels_last,
            "compile": self.compiled,
            "train_images": self.train_count,
            "val_images": self.val_count,
            "epochs": self.config.epochs,
            "time_minutes": self.config.time_minutes,
            "start_epoch": self.progress.epoch + 1,
        }

    def _finish(self) -> dict[str, Any]:
        p, c = self.progress, self.config
        self._write_plot()  # before the test pass, so a failure there still leaves the curves
        self.callbacks.on_status("evaluating on the test set")
        # the final model: best by validation top-1, or the last epoch without a validation split
        if self.val_loader is not None and self.paths.best.exists():
            best = load_checkpoint(self.paths.best)
            self.eval_model.load_state_dict(best["state_dict"])
        t0 = time.perf_counter()
        test = self._evaluate(self.test_loader)
        test_seconds = time.perf_counter() - t0
        rows = self.history
        train_images = sum(r["train_images"] for r in rows)
        train_time = sum(
            r["images_per_second"] and r["train_images"] / r["images_per_second"] for r in rows
        )
        summary = {
            "run_dir": str(self.paths.folder),
            "dataset": c.dataset,
            "recipe": c.recipe,
            "model": c.model,
            "parameters": count_parameters(self.model),
            "device": str(self.runtime.device),
            "precision": self.runtime.precision,
            "epochs": p.epoch,
            "time_budget_minutes": c.time_minutes,
            "test_top1": test.top1,
            "test_top5": test.top5,
            "test_loss": test.loss,
            "best_epoch": p.best_epoch,
            "best_val_top1": p.best_val_top1 if self.val_loader is not None else None,
            "train_seconds": p.elapsed_seconds,
            "train_images_per_second": train_images / max(train_time, 1e-9),
            "test_images_per_second": test.count / max(test_seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(self.runtime.device),
        }
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(self.paths.summary, lambda f: f.write(text.encode()))
        self.callbacks.on_end(summary)
        return summary


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD over the trainable parameters. BatchNorm and bias parameters (1-d tensors) get
    their lr scaled by `bias_lr_scale` and weight decay only with `decay_norm_and_bias`; with
    that set and no lr scale it is the write-up's single group (`SGD(model.parameters())`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.decay_norm_and_bias and config.bias_lr_scale == 1.0:
        groups: list[dict[str, Any]] = [{"params": params, "lr_scale": 1.0}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "lr_scale": 1.0},
            {
                "params": [p for p in params if p.ndim <= 1],
                "lr_scale": config.bias_lr_scale,
                "weight_decay": config.weight_decay if config.decay_norm_and_bias else 0.0,
            },
        ]
    for group in groups:
        group["lr"] = config.lr * group["lr_scale"]
        # the plateau schedule's cuts so far; in every group from the start, so that any
        # last.pt (even one saved mid-warm-up) carries it and only older files are migrated
        group["plateau_factor"] = 1.0
    return torch.optim.SGD(
        groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak resident memory of this process (CPU, MPS) or peak allocated GPU memory (CUDA), in
    MiB; None where the platform cannot tell (Windows has no `resource` module)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
