"""Early stopping (--patience N): a run ends once N finished epochs in a row have brought no
better validation top-1 (best.pt then holds the best of them).

The counter is the number of epochs since the best one, `epoch - best_epoch` of the run's
Progress: last.pt has always saved both, so a resumed run, an older checkpoint's included, counts
on from where it stopped, and no second copy of it can disagree with best.pt.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cifarnet.config.settings import TrainConfig, flag_name
from cifarnet.errors import ConfigError

if TYPE_CHECKING:
    from cifarnet.training.state import Progress


def epochs_without_improvement(progress: Progress) -> int:
    """Finished epochs since the one with the best validation top-1."""
    return progress.epoch - progress.best_epoch


def stopped_early(progress: Progress, config: TrainConfig) -> bool:
    """Whether the run's patience is spent. Only counted at an epoch's end: a run resumed in
    the middle of an epoch finishes that epoch first."""
    return (
        config.patience is not None
        and progress.step_in_epoch == 0
        and epochs_without_improvement(progress) >= config.patience
    )


def ended_by_patience(progress: Progress, config: TrainConfig) -> bool:
    """Whether --patience ended the run before its length (epochs, or --time budget) did."""
    if not stopped_early(progress, config):
        return False
    if config.time_minutes is not None:
        return not progress.budget_spent(config.time_minutes)
    return progress.epoch < config.epochs


def check_not_stopped_early(
    path: str | os.PathLike, config: TrainConfig, progress: Progress
) -> None:
    """Refuse to resume a run whose patience is spent: it would stop again at once."""
    if stopped_early(progress, config):
        waited = epochs_without_improvement(progress)
        raise ConfigError(
            f"{path}: the run stopped early after epoch {progress.epoch}, {waited} epochs "
            f"without a better validation top-1 than epoch {progress.best_epoch}'s "
            f"({flag_name('patience')} {config.patience}); pass {flag_name('patience')} N "
            f"(N > {waited}) to train further"
        )
