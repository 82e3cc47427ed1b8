"""Where a run stands, and resuming it: Progress (saved in last.pt; --patience counts from its
epoch and best_epoch), the running sums of an epoch, the epoch's shuffling and the random states
last.pt keeps, what a resume may change (FIXED_ON_RESUME) and the checks it passes, and
restoring the training state from last.pt, older files' migrations included."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifarnet.config.settings import TrainConfig, flag_name
from cifarnet.errors import CheckpointError, ConfigError, one_line
from cifarnet.io.checkpoint import SavedRun, load_checkpoint
from cifarnet.training.early_stopping import check_not_stopped_early, stopped_early

if TYPE_CHECKING:
    from cifarnet.data.loader import BatchLoader
    from cifarnet.training.setup import Optimisation
    from cifarnet.training.step import StepResult

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
    # torch.compile's warm-up (training/compiling.py), apart from elapsed_seconds
    compile_seconds: float = 0.0

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

    def record_epoch(self, epoch: int, val_top1: float | None) -> bool:
        """Mark `epoch` complete with its validation top-1 (None without a validation split);
        returns whether it is the best so far (every epoch is, without validation)."""
        self.epoch, self.step_in_epoch, self.partial = epoch, 0, {}
        improved = val_top1 is None or val_top1 > self.best_val_top1
        if improved:
            self.best_val_top1 = val_top1 if val_top1 is not None else float("nan")
            self.best_epoch = epoch
        return improved

    def finished(self, config: TrainConfig) -> bool:
        """Whether the run is over: its budget spent with --time, else its epochs done; or its
        --patience spent."""
        if stopped_early(self, config):
            return True
        if config.time_minutes is not None:
            return self.budget_spent(config.time_minutes)
        return self.epoch >= config.epochs


@dataclass
class EpochSums:
    """Running sums of the epoch in progress. The loss and correct counts stay on the device
    (0-d tensors) so that a step does not wait for the device; `seconds` is its step time."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int
    seconds: float

    @classmethod
    def start(cls, partial: dict[str, float], device: torch.device) -> EpochSums:
        """Zero sums, or those of an epoch a resumed run stopped in (Progress.partial)."""
        sums = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, **partial}
        return cls(
            torch.tensor(sums["loss_sum"], device=device),
            torch.tensor(sums["correct"], device=device),
            int(sums["count"]),
            sums["seconds"],
        )

    def add(self, result: StepResult) -> None:
        """Add a step's sums (still on the device)."""
        self.loss_sum += result.loss_sum
        self.correct += result.correct
        self.count += result.count

    def partial(self) -> dict[str, float]:
        """The sums as Progress.partial keeps them in last.pt."""
        return {
            "loss_sum": self.loss_sum.item(),
            "correct": self.correct.item(),
            "count": float(self.count),
            "seconds": self.seconds,
        }

    def step_stats(self, loss_sum: float, lr: float, elapsed_seconds: float) -> dict[str, float]:
        """What `on_step` is told: the epoch's running means, given its loss sum read off the
        device, the step's lr and the run's elapsed seconds."""
        return {
            "loss": loss_sum / self.count,
            "top1": 100.0 * self.correct.item() / self.count,
            "lr": lr,
            "images_per_second": self.count / max(self.seconds, 1e-9),
            "elapsed_seconds": elapsed_seconds,
        }

    def means(self) -> tuple[float, float]:
        """(mean loss, top-1 in percent) over the epoch's images."""
        count = max(self.count, 1)
        return self.loss_sum.item() / count, 100.0 * self.correct.item() / count


def resumed_config(
    path: str | os.PathLike, overrides: dict[str, Any]
) -> tuple[TrainConfig, dict[str, Any]]:
    """The config of the run saved in `path` (a last.pt) with `overrides` applied, and the
    loaded checkpoint. Refuses a file that is no last.pt, a change of a setting in
    FIXED_ON_RESUME, and a run with nothing left to train."""
    if Path(path).is_dir():
        raise CheckpointError(
            f"{path} is a folder; resume from the run's last.pt ({Path(path) / 'last.pt'})"
        )
    ckpt = load_checkpoint(path)
    saved = SavedRun(ckpt)
    if saved.kind != "last":
        raise CheckpointError(
            f"{path} is not a last.pt (it has no optimizer state); resume from the run's last.pt"
        )
    try:
        settings = saved.train_config
        # a run saved before this setting existed decayed every parameter exactly when its
        # recipe was "reference", and its optimizer state has the parameter groups to match
        legacy = {"decay_norm_and_bias": settings.get("recipe") == "reference"}
        values = {**legacy, **settings, **overrides}
        progress = Progress(**saved.progress)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} lacks its training state ({exc}); damaged") from None
    for name in FIXED_ON_RESUME:
        if name in overrides and overrides[name] != settings.get(name):
            raise ConfigError(
                f"{flag_name(name)} cannot change when resuming ({path} was "
                f"started with {settings.get(name)!r}); start a new run instead"
            )
    config = TrainConfig.from_dict(values, source=str(path))
    _check_there_is_more_to_train(path, config, progress, overrides)
    return config, ckpt


def _check_there_is_more_to_train(
    path: str | os.PathLike, config: TrainConfig, progress: Progress, overrides: dict[str, Any]
) -> None:
    """Refuse a resume that would end at once: it would train nothing and yet rewrite the run's
    config.json and summary with settings that never ran. A run saved mid-epoch may always
    finish that epoch."""
    if progress.step_in_epoch:
        return
    check_not_stopped_early(path, config, progress)
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


def load_weights(
    model: torch.nn.Module, ckpt: dict[str, Any], path: str | os.PathLike, name: str
) -> None:
    """Load last.pt's raw weights into the fresh `model` (named `name`): a mismatch fails
    here, before any data is loaded."""
    try:
        model.load_state_dict(SavedRun(ckpt).state_dict)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit model {name!r} (wrong architecture: {one_line(exc)})"
        ) from None


def epoch_order(
    loader: BatchLoader,
    device: torch.device,
    seed: int,
    epoch: int,
    start: int,
    saved: dict[str, Any] | None,
) -> tuple[torch.Generator, torch.Tensor]:
    """The epoch's shuffling generator on `device` (seeded by --seed and the epoch) and image
    order (int64, (N,)). An epoch a resumed run stopped in (`start` > 0) continues with the
    ones last.pt saved (`saved`, its rng["data"])."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    if start and saved is not None:
        if not _restore_generator(generator, saved):
            # saved on another device type (a CPU generator's state does not fit a CUDA
            # one): the epoch goes on in the saved order, its augmentation drawn afresh from
            # the seed, the epoch and the step
            generator.manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + start)
        return generator, saved["order"].to(device)
    return generator, loader.epoch_order(generator)


def _restore_generator(generator: torch.Generator, saved: dict[str, Any]) -> bool:
    """Set `generator` to the saved state; False when it was saved on another device type."""
    if saved.get("device", generator.device.type) != generator.device.type:
        return False
    try:
        generator.set_state(saved["generator"])
    except RuntimeError:  # an older last.pt, without "device", from another device type
        return False
    return True


def rng_state(generator: torch.Generator | None, order: torch.Tensor | None) -> dict[str, Any]:
    """last.pt's "rng" entry: torch's generators and, saved mid-epoch, the epoch's shuffling
    generator and image order, so that a resumed run draws exactly what this one would have."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": {
            "generator": generator.get_state(),
            "order": order.cpu(),
            "device": generator.device.type,
        }
        if generator is not None and order is not None
        else None,
    }


@dataclass
class Restored:
    """What a resumed run continues from, besides the states loaded in place."""

    progress: Progress
    history: list[dict[str, Any]]
    data_state: dict[str, Any] | None  # the interrupted epoch's generator state and image order


def restore_state(
    ckpt: dict[str, Any], model: torch.nn.Module, optim: Optimisation, path: Path | None
) -> Restored:
    """Load last.pt's training state into `model` and `optim` in place; a state that does not
    fit this configuration raises CheckpointError naming `path`."""
    try:
        return _load_state(SavedRun(ckpt), model, optim)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: cannot resume from it with this configuration "
            f"({type(exc).__name__}: {one_line(exc)})"
        ) from None


def _load_state(saved: SavedRun, model: torch.nn.Module, optim: Optimisation) -> Restored:
    model.load_state_dict(saved.state_dict)
    optim.optimizer.load_state_dict(saved.optimizer)
    if optim.plateau is not None and saved.scheduler:
        optim.plateau.load_state_dict(saved.scheduler)
        # checkpoints written before plateau_factor existed hold the cuts in "lr" alone
        groups = optim.optimizer.param_groups
        factor = groups[0]["lr"] / saved.train_config["lr"]
        for group in groups:
            group.setdefault("plateau_factor", factor)
    if optim.scaler is not None and saved.scaler:
        optim.scaler.load_state_dict(saved.scaler)
    if optim.ema is not None and saved.ema_state_dict:
        optim.ema.load_state_dict(saved.ema_state_dict)
    # a run given --lookahead on resuming, without saved slow weights, starts them from the model
    if optim.lookahead is not None and saved.lookahead_state:
        optim.lookahead.load_state_dict(saved.lookahead_state)
    rng = saved.rng
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])
    return Restored(Progress(**saved.progress), list(saved.history), rng.get("data"))
