"""One training run: `train(config)`, the library entry point (the CLI only parses flags and
renders callbacks), and the Trainer that drives a run through its epochs.

The jobs around the loop live beside it: setup (data loaders, optimizer, EMA, lookahead,
compiling), optim (the lr schedule), state (progress, the epoch's shuffling, resuming), signals
(stopping cleanly), divergence, checkpoints (best.pt, last.pt), report (the rows and summaries a
run writes) and io.run_folder (the run's folder and its JSON files).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import torch

from cifarnet.config.settings import TrainConfig, resolve_config
from cifarnet.data.augment import resize_batch, training_resolution
from cifarnet.data.datasets import get_spec
from cifarnet.data.loader import BatchLoader
from cifarnet.errors import OutputError, TrainingInterrupted
from cifarnet.io.checkpoint import SavedRun, load_checkpoint
from cifarnet.io.metrics_log import MetricsLog
from cifarnet.io.run_folder import (
    RunPaths,
    check_runs_dir,
    new_run_folder,
    write_config,
    write_plot,
    write_summary,
)
from cifarnet.models import count_parameters, create_model
from cifarnet.models.resnet import zero_init_residual
from cifarnet.runtime.device import Runtime, out_of_memory_as, resolve_runtime, seed_everything
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.checkpoints import CheckpointWriter
from cifarnet.training.compiling import compile_shapes
from cifarnet.training.distributed import Distributed, joined
from cifarnet.training.divergence import check_weights, diverged
from cifarnet.training.failures import removed_if_unfinished
from cifarnet.training.optim import LrSchedule, progress_fraction
from cifarnet.training.report import config_meta, epoch_row, run_summary, start_info, stop_message
from cifarnet.training.resume_data import check_same_training_data
from cifarnet.training.sam import check_sam_precision
from cifarnet.training.setup import Optimisation, TrainData, prepare_data, prepare_model
from cifarnet.training.signals import SIGPIPE, OutputGuard, StopFlag
from cifarnet.training.state import (
    EpochSums,
    Progress,
    epoch_order,
    load_weights,
    restore_state,
    resumed_config,
)
from cifarnet.training.step import EvalResult, evaluate, train_step


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
    checkpoint = None
    if resume is not None:
        config, checkpoint = resumed_config(resume, {**settings, **(overrides or {})})
    elif config is None:
        config = resolve_config(settings)
    elif settings:
        raise TypeError("pass either a TrainConfig or settings as keywords, not both")
    if overrides and resume is None:
        config = config.replace(**overrides)
    # under torchrun, this process's part of a distributed run (distributed.py)
    with joined(config) as dist:
        if resume is None:
            return Trainer(config, callbacks, dist=dist).run()
        return Trainer.resume(resume, config, checkpoint, callbacks, dist).run()


def _counted(
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    total: int,
    progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`batches`, telling `progress(images done, total)` (when given) once each was used."""
    done = 0
    for x, y in batches:
        yield x, y
        done += len(y)
        if progress is not None:
            progress(done, total)


def _load_data(
    config: TrainConfig,
    runtime: Runtime,
    callbacks: TrainCallbacks,
    checkpoint: dict[str, Any] | None,
    resume_path: Path | None,
    dist: Distributed,
) -> TrainData:
    """The run's data (this process's share of it). A new run's --runs-dir is checked first (a
    run that could not be saved is refused before the data is loaded, as is --sam at fp16); a
    resumed run's data must be what last.pt was trained on, and every process's the same."""
    if checkpoint is None:
        check_runs_dir(config.runs_dir)
    if config.sam is not None:
        check_sam_precision(runtime.precision)
    data = prepare_data(config, runtime, callbacks, (dist.rank, dist.world_size))
    if checkpoint is not None:
        check_same_training_data(checkpoint, data.info, data.source, resume_path)
    dist.check_same_data(data.info.get("train_fingerprint"), config.dataset)
    return data


def _evaluate(
    optim: Optimisation,
    runtime: Runtime,
    loader: BatchLoader,
    dist: Distributed,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """An evaluation pass of the weights rank 0 holds over `loader` (this process's part of
    the images); `progress(done, total)` told after each batch."""
    dist.broadcast_model(optim.eval_model)
    batches = _counted(loader.batches(), len(loader.labels), progress)
    with out_of_memory_as(
        f"out of memory on {runtime.device} while evaluating batches of "
        f"{loader.batch_size}; set a smaller eval_batch_size in a --config file"
    ):
        # compiled: evaluation batches padded to one shape
        pad_to = loader.batch_size if optim.compiled else None
        return evaluate(optim.eval_forward, batches, runtime, pad_to=pad_to, all_sum=dist.sum)


def _save_stopped(
    trainer: Trainer, generator: torch.Generator | None, order: torch.Tensor | None
) -> None:
    """last.pt and the plot of a run stopped by a signal (on the process that writes them)."""
    trainer.checkpoints.save_last(trainer.progress, trainer.history, generator, order)
    write_plot(trainer.paths, trainer.history)


def _load_best(paths: RunPaths, model: torch.nn.Module) -> None:
    """The weights of the run's best.pt, when it has one, into `model`."""
    if paths.best.exists():
        model.load_state_dict(SavedRun(load_checkpoint(paths.best)).state_dict)


def _append_row(metrics: MetricsLog, row: dict[str, Any]) -> None:
    """Append the epoch's row to metrics.csv; a failure is one line saying how to repair it."""
    try:
        metrics.append(row)
    except OSError as exc:
        raise OutputError(
            f"could not append epoch {row['epoch']} to {metrics.path}: "
            f"{exc.strerror or exc}; last.pt holds every row, and resuming from it "
            "rewrites the file"
        ) from None


class Trainer:
    """A run, new or resumed from its last.pt: `run()` trains it to its end and returns the
    summary."""

    def __init__(
        self,
        config: TrainConfig,
        callbacks: TrainCallbacks,
        folder: Path | None = None,
        checkpoint: dict[str, Any] | None = None,
        dist: Distributed | None = None,
    ) -> None:
        if config.data_dir is not None:
            # stored absolute, so `evaluate` finds the run's data from any folder
            config = config.replace(data_dir=os.path.abspath(os.path.expanduser(config.data_dir)))
        self.config, self.dist = config, dist or Distributed()
        self.stop = StopFlag()
        self.callbacks = OutputGuard(self.dist.callbacks(callbacks, config), self.stop)
        # fail on a bad model name or kwargs before loading data or creating folders; seeded
        # first, so that the initial weights depend on --seed alone
        self.num_classes = get_spec(config.dataset).num_classes
        seed_everything(config.seed, config.deterministic)
        self.model = create_model(config.model, self.num_classes, **config.model_kwargs)
        if config.zero_init_residual:
            zero_init_residual(self.model)
        self.runtime = resolve_runtime(config.device, config.precision)
        self.model = self.dist.prepare(self.model, config, self.runtime.device)  # --sync-bn
        self._folder, self._checkpoint = folder, checkpoint
        self._resume_path: Path | None = None

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        config: TrainConfig,
        ckpt: dict[str, Any],
        callbacks: TrainCallbacks,
        dist: Distributed,
    ) -> Trainer:
        """A trainer that continues the run of `path` (a last.pt, loaded as `ckpt`) with its
        `config` (from `resumed_config`)."""
        trainer = cls(config, callbacks, folder=Path(path).parent, checkpoint=ckpt, dist=dist)
        trainer._resume_path = Path(path)
        load_weights(trainer.model, ckpt, path, config.model)
        return trainer

    def run(self) -> dict[str, Any]:
        """Train to the end (or the time budget, or a stop signal) and return the summary. A
        new run that fails before it saved a checkpoint leaves no folder behind."""
        new = self._checkpoint is None
        with removed_if_unfinished(lambda: getattr(self, "paths", None) if new else None):
            self._start()
            with self.stop:
                try:
                    while not self._finished():
                        self._run_epoch()
                    if self.config.time_minutes is not None:
                        # last.pt was written before its own save was timed: again, with the
                        # progress this stop was decided on, so that `--resume` sees the same
                        self.checkpoints.save_last(self.progress, self.history)
                except TrainingInterrupted:
                    raise  # stopped by a signal: its plot is drawn, and a second Ctrl-C is live
                except Exception:
                    # the curves of the epochs done, however the run failed (divergence, a full
                    # disk, ...); best effort: the run's own error is the one to report.
                    # (Not on a second Ctrl-C: that asks to stop at once.)
                    with contextlib.suppress(Exception):
                        write_plot(self.paths, self.history)
                    raise
            return self._finish()

    def _start(self) -> None:
        """Data, model and optimizer set up, a resumed run's state restored, the run folder
        (a new one, or the resumed run's) holding config.json and the metrics so far."""
        c, rt, dist = self.config, self.runtime, self.dist
        self.data = _load_data(c, rt, self.callbacks, self._checkpoint, self._resume_path, dist)
        wrap = partial(dist.wrap, device=rt.device)
        self.optim = prepare_model(self.model, c, rt, self.data, self._checkpoint is None, wrap)
        self.schedule = LrSchedule(c, self.optim.optimizer, self.optim.plateau)
        self.progress, self.history = Progress(), []
        self._resume_data_state: dict[str, Any] | None = None
        if self._checkpoint is not None:
            restored = restore_state(self._checkpoint, self.model, self.optim, self._resume_path)
            self.progress, self.history = restored.progress, restored.history
            self._resume_data_state = restored.data_state
            self.paths = RunPaths(self._folder, writes=dist.is_main)
        else:
            folder = dist.on_main(lambda: new_run_folder(c.runs_dir, c.name or "train"))
            self.paths = RunPaths(folder, writes=dist.is_main)
        dist.seed(c.seed, self.progress.global_step)
        if self.optim.compiled:  # every shape the run uses, compiled apart from its training
            self.progress.compile_seconds += compile_shapes(
                self.model, self.optim, rt, c, self.callbacks
            )
        self.checkpoints = CheckpointWriter(
            self.paths, c, self.num_classes, self.data.info, self.model, self.optim
        )
        self.metrics = MetricsLog(self.paths.metrics, enabled=dist.is_main)
        self.metrics.rewrite(self.history)  # a resumed run's CSV matches its checkpoint exactly
        self._parameters = parameters = count_parameters(self.model)
        compiled = self.optim.compiled
        write_config(self.paths, c.to_dict(), config_meta(rt, compiled, self.data, parameters))
        info = start_info(c, rt, self.paths, parameters, compiled, self.data, self.progress)
        self.callbacks.on_start(info)

    def _finished(self) -> bool:
        return self.progress.finished(self.config)

    def _run_epoch(self) -> None:
        """One epoch, or the rest of the one a resumed run stopped in: its steps, then its end
        (validation, checkpoints, the metrics row). Stops at a signal or a spent --time."""
        p, loader = self.progress, self.data.train_loader
        epoch, start, steps = p.epoch + 1, p.step_in_epoch, len(loader)
        saved_order, self._resume_data_state = self._resume_data_state, None
        generator, order = epoch_order(
            loader, self.runtime.device, self.config.seed, epoch, start, saved_order
        )
        self.callbacks.on_epoch_start(epoch, steps)
        sums = EpochSums.start(self.dist.share(p.partial), self.runtime.device)
        totals = sums  # the epoch's sums over every process, as of the last sync point
        # reading the loss waits for the device: on a GPU only every 25 steps; a distributed
        # run decides whether to stop there only, where its processes agree
        sync_every = 1 if self.runtime.device.type == "cpu" else 25
        self.optim.forward_model.train()
        t_loop, unsynced = time.perf_counter(), 0.0  # seconds not yet in p.elapsed_seconds
        batches = loader.batches(generator, order, start, epoch)
        for step, (x, y) in enumerate(batches, start=start + 1):
            lr = self.schedule.set_lr(p, steps)
            self._train_step(x, y, epoch, step, steps, sums)
            now = time.perf_counter()
            p.last_step_seconds = now - t_loop
            sums.seconds += now - t_loop
            unsynced, t_loop = unsynced + now - t_loop, now
            synced = step % sync_every == 0 or step == steps
            if synced or not self.dist.enabled:  # --time's lr and resizing: one clock for all
                p.elapsed_seconds, unsynced = p.elapsed_seconds + unsynced, 0.0
            if synced:
                totals = self._report_step(epoch, step, steps, sums, lr)
            if self.dist.enabled and not synced:
                continue
            if self.dist.stop_asked(self.stop) is not None and step < steps:
                check_weights(self.model, f"epoch {epoch}, step {step}", lr, p)
                p.step_in_epoch, p.partial = step, totals.partial()
                self._interrupt(generator, order)
            if self._finished():
                break
        lr = self.schedule.set_lr(p, steps)
        train_stats = totals.means()
        check_weights(self.model, f"the end of epoch {epoch}", lr, p)
        self._end_epoch(epoch, totals, train_stats, lr)
        self.dist.reduce_step(sums, p, self.stop)  # every process's clock and stop, agreed
        stop = self.dist.stop_asked(self.stop)
        # a closed output after the last epoch loses nothing: the run ends as usual, silently
        if stop is not None and not (stop == SIGPIPE and self._finished()):
            self._interrupt(None, None)

    def _train_step(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int, steps: int, sums: EpochSums
    ) -> None:
        """One optimizer step on images x (N, 3, 32, 32) and labels y (N,), after progressive
        resizing and MixUp/CutMix when they are on; its sums added to `sums`."""
        c, rt, o, p = self.config, self.runtime, self.optim, self.progress
        if c.resize_from < 32:
            side = training_resolution(c.resize_from, progress_fraction(c, p, steps))
            x = resize_batch(x, side)
        if self.data.mix.enabled:
            x, y = self.data.mix(x, y, self.num_classes, (c.seed, epoch, step))
        with out_of_memory_as(
            f"out of memory on {rt.device} at batch size {c.batch_size}; try a smaller --batch-size"
        ):
            result = train_step(o.forward_model, x, y, o.stepper, rt, c.label_smoothing, o.scaler)
        p.global_step += 1
        if o.lookahead is not None:
            o.lookahead.after_step(self.model, p.global_step, progress_fraction(c, p, steps))
        if o.ema is not None:
            o.ema.update_parameters(self.model)
        sums.add(result)

    def _report_step(
        self, epoch: int, step: int, steps: int, sums: EpochSums, lr: float
    ) -> EpochSums:
        """At a sync point: check the epoch's loss so far (over every process) and tell
        `on_step` the running numbers; returns the epoch's sums over every process."""
        totals = self.dist.reduce_step(sums, self.progress, self.stop)
        loss_value = totals.loss_sum.item()
        if not math.isfinite(loss_value):
            raise diverged(f"loss is {loss_value} at epoch {epoch}, step {step}", lr, self.progress)
        stats = totals.step_stats(loss_value, lr, self.progress.elapsed_seconds)
        self.callbacks.on_step(step, steps, stats)
        return totals

    def _end_epoch(
        self, epoch: int, sums: EpochSums, train_stats: tuple[float, float], lr: float
    ) -> None:
        """Validate, step the plateau schedule, save the checkpoints and append the row."""
        p = self.progress
        t0 = time.perf_counter()
        o, rt, dist, val_loader = self.optim, self.runtime, self.dist, self.data.val_loader
        val = _evaluate(o, rt, val_loader, dist) if val_loader is not None else None
        # the write-up divides the lr by 10 when validation error stops improving;
        # without a validation split the training loss is watched instead
        self.schedule.end_epoch(100.0 - val.top1 if val is not None else train_stats[0])
        row = epoch_row(epoch, lr, train_stats, val, sums, time.perf_counter() - t0)
        improved = p.record_epoch(epoch, val.top1 if val is not None else None)
        validation = time.perf_counter() - t0
        p.elapsed_seconds += validation
        # what last.pt records for a resumed --time run to reserve for its final epoch's end:
        # this epoch's validation; the save's own seconds are known only after it
        p.epoch_end_seconds = validation
        row["elapsed_seconds"] = p.elapsed_seconds
        self.history.append(row)
        t_save = time.perf_counter()
        save = epoch % self.config.save_every == 0 or self._finished()  # --save-every
        self.checkpoints.save_epoch(
            epoch, self.progress, self.history, improved, save, lambda: self.metrics.append(row)
        )
        p.elapsed_seconds += time.perf_counter() - t_save
        p.epoch_end_seconds = time.perf_counter() - t0
        _append_row(self.metrics, row)
        self.callbacks.on_epoch_end(row)

    def _interrupt(self, generator: torch.Generator | None, order: torch.Tensor | None) -> NoReturn:
        """Stop for the signal received: save last.pt and the plot, raise TrainingInterrupted."""
        signum = self.dist.stop_asked(self.stop) or signal.SIGINT
        # the others wait for rank 0's save: torchrun stops every process once one has exited
        self.dist.on_main(partial(_save_stopped, self, generator, order))
        mid_epoch = generator is not None
        message = stop_message(signum, self.progress, self.paths, mid_epoch, self._finished())
        raise TrainingInterrupted(message, signum, str(self.paths.last))

    def _finish(self) -> dict[str, Any]:
        """Evaluate the final model on the test set; write and return the summary."""
        write_plot(self.paths, self.history)  # before the test pass: a failure there keeps it
        test_images = self.data.test_count
        self.callbacks.on_status(f"evaluating on the test set ({test_images:,} images)")
        validated = self.data.val_loader is not None
        # the final model: best by validation top-1, or the last epoch without a validation split
        if validated:  # read by rank 0, whose weights _evaluate shares
            self.dist.on_main(partial(_load_best, self.paths, self.optim.eval_model))
        t0 = time.perf_counter()
        o, rt, dist = self.optim, self.runtime, self.dist
        test = _evaluate(o, rt, self.data.test_loader, dist, self.callbacks.on_test_progress)
        test_seconds = time.perf_counter() - t0
        c, rt, p, parameters = self.config, self.runtime, self.progress, self._parameters
        summary = run_summary(
            c, rt, self.paths, parameters, p, self.history, validated, test, test_seconds
        )
        write_summary(self.paths, summary)
        self.callbacks.on_end(summary)
        return summary
