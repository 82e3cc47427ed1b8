"""Saving a run's checkpoints: best.pt (the weights validation measured) and last.pt (all that
an exact resume needs), their entries laid out by io.checkpoint's schema."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cifarnet.config.settings import TrainConfig
from cifarnet.errors import OutputError
from cifarnet.io.checkpoint import best_payload, last_payload, save_checkpoint
from cifarnet.io.run_folder import RunPaths
from cifarnet.models import model_config
from cifarnet.training.failures import last_not_saved
from cifarnet.training.setup import Optimisation
from cifarnet.training.state import Progress, rng_state


class CheckpointWriter:
    """Writes the best.pt and last.pt of the run in `paths` (atomically: a crash leaves the
    previous file whole)."""

    def __init__(
        self,
        paths: RunPaths,
        config: TrainConfig,
        num_classes: int,
        data_info: dict[str, Any],
        model: nn.Module,
        optim: Optimisation,
    ) -> None:
        self.paths, self.config, self.num_classes = paths, config, num_classes
        self.data_info, self.model, self.optim = data_info, model, optim
        self._pending_best: dict[str, Any] | None = None

    def save_best(self, progress: Progress, write: bool = True) -> None:
        """best.pt: the weights validation measured (copies: training goes on changing them).
        `write=False` keeps them in memory until the next save_last (--save-every)."""
        if not self.paths.writes:
            return
        eval_model = self.optim.eval_model
        state = {k: v.detach().cpu().clone() for k, v in eval_model.state_dict().items()}
        self._pending_best = best_payload(**self._shared(state, progress))
        if write:
            self.write_pending_best()

    def write_pending_best(self) -> None:
        """Write the best weights kept in memory, if any, to best.pt."""
        if self._pending_best is not None:
            save_checkpoint(self._pending_best, self.paths.best)
            self._pending_best = None

    def save_epoch(
        self,
        epoch: int,
        progress: Progress,
        history: list[dict[str, Any]],
        improved: bool,
        save: bool,
        append_row: Callable[[], None],
    ) -> None:
        """The checkpoints at the end of `epoch`: best.pt first, then last.pt (it carries the
        history); the caller appends the CSV row after. After a crash at any point, resuming
        redoes the epoch last.pt has not recorded (re-saving best.pt) and rewrites metrics.csv
        from last.pt, so rows are never lost or doubled. (last.pt first could record a best
        epoch whose weights never reached best.pt.) With `save` False (--save-every) a better
        best.pt is only kept in memory until the next save."""
        if improved:
            self.save_best(progress, write=save)
        if not save:
            return
        try:
            self.save_last(progress, history)
        except OutputError as exc:
            raise last_not_saved(exc, epoch, improved, append_row) from None

    def save_last(
        self,
        progress: Progress,
        history: list[dict[str, Any]],
        generator: torch.Generator | None = None,
        order: torch.Tensor | None = None,
    ) -> None:
        """last.pt: the raw weights and every training state; `generator` and `order` (the
        epoch's shuffling) when saved mid-epoch. best.pt kept in memory is written first.
        Nothing on a process that does not write the run folder."""
        if not self.paths.writes:
            return
        self.write_pending_best()
        o = self.optim
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        payload = last_payload(
            **self._shared(state, progress),
            optimizer=o.optimizer.state_dict(),
            scheduler=o.plateau.state_dict() if o.plateau is not None else None,
            scaler=o.scaler.state_dict() if o.scaler is not None else None,
            ema_state_dict=o.ema.state_dict() if o.ema is not None else None,
            lookahead_state=o.lookahead.state_dict() if o.lookahead is not None else None,
            rng=rng_state(generator, order),
            history=history,
        )
        save_checkpoint(payload, self.paths.last)

    def _shared(self, state_dict: dict[str, torch.Tensor], progress: Progress) -> dict[str, Any]:
        """The entries best.pt and last.pt share, with `state_dict` as the weights."""
        c = self.config
        return {
            "model": model_config(c.model, self.num_classes, c.model_kwargs),
            "state_dict": state_dict,
            "data": self.data_info,
            "train_config": c.to_dict(),
            "progress": progress.__dict__.copy(),
        }
