"""A hyper-parameter search with Optuna (`cifarnet tune`, pip install 'cifarnet[tune]').

Each trial is a normal run folder, runs/<study>/trial-NNNN/, trained from the base settings with
the trial's values; its objective is the best validation top-1 (never the test set), reported
after every epoch so that poor trials are pruned (Optuna's median rule). The study lives in a
storage several processes or machines can share (by default the SQLite file
runs/<study>/study.db, or any database URL Optuna accepts): more workers started on the same
storage search together, and `--trials` counts the study's finished trials (complete or pruned),
so a rerun after Ctrl-C continues the study without repeating them. A new study's first trial
holds the base settings' own values (when the space holds them), the baseline of the search.

The search space: setting name -> a range ("0.01:0.4:log", {"low", "high", "log", "step"}) or
choices ("128,256", a list, {"choices"}), from `--search` flags or a JSON/YAML file.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarnet.errors import ConfigError, TrainingInterrupted, did_you_mean
from cifarnet.training.callbacks import TrainCallbacks

INSTALL_HINT = "pip install 'cifarnet[tune]'"
STUDY_FILE = "study.json"
# settings that define the experiment, not a hyper-parameter of it
NOT_TUNABLE = (
    "recipe",
    "dataset",
    "data_dir",
    "model_kwargs",
    "val_size",
    "subset",
    "device",
    "precision",
    "compile",
    "deterministic",
    "seed",
    "runs_dir",
    "name",
    "download",
    "tensorboard",
    "eval_batch_size",
    "time_minutes",
)
RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Param:
    """One setting's search range (`low`, `high`, `log`, `step`) or its `choices`."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def describe(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        return out | ({"step": self.step} if self.step is not None else {})


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"cifarnet tune needs Optuna: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ---------------------------------------------------------------- the search space


def _kinds() -> dict[str, str]:
    from cifarnet.config.settings import setting_specs

    return {s.name: s.kind for s in setting_specs() if s.name not in NOT_TUNABLE}


def _coerce(name: str, kind: str, text: str) -> Any:
    """A flag's text as the setting's type."""
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"search space: {name}: {text!r} is not a {kind}") from None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"search space: {name}: {text!r} is not true or false")
        return text.lower() == "true"
    return text


def parse_search_flag(text: str) -> tuple[str, Any]:
    """`--search lr=0.01:0.4:log` -> ("lr", {"low": 0.01, "high": 0.4, "log": True});
    `--search batch_size=128,256` -> ("batch_size", [128, 256])."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not spec.strip():
        raise ConfigError(
            f"--search {text!r}: give NAME=LOW:HIGH[:log] or NAME=A,B,... (e.g. lr=0.01:0.4:log)"
        )
    return name, spec.strip()


def _from_text(name: str, kind: str, spec: str) -> dict[str, Any] | list[Any]:
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip() != "log"):
            raise ConfigError(f"search space: {name}={spec!r}: give LOW:HIGH or LOW:HIGH:log")
        number = "int" if kind == "int" else "float"
        low, high = (_coerce(name, number, p) for p in parts[:2])
        return {"low": low, "high": high, "log": len(parts) == 3}
    choices = [_coerce(name, kind, p) for p in spec.split(",")]
    if len(choices) < 2:
        raise ConfigError(f"search space: {name}={spec!r}: give a range LOW:HIGH or 2+ choices")
    return choices


def _param(name: str, value: Any, kinds: dict[str, str]) -> Param:
    """One entry of the space, checked for its form (not yet against the settings' rules)."""
    if name not in kinds:
        from cifarnet.config.settings import setting_specs

        if name in {s.name for s in setting_specs()}:
            raise ConfigError(f"search space: {name} cannot be searched (it defines the run)")
        raise ConfigError(
            f"search space: unknown setting {name!r}{did_you_mean(name, list(kinds))}; "
            f"searchable: {', '.join(sorted(kinds))}"
        )
    kind = kinds[name]
    if isinstance(value, str):
        value = _from_text(name, kind, value)
    if isinstance(value, dict) and set(value) == {"choices"}:
        value = value["choices"]
    if isinstance(value, list):
        if len(value) < 2 or len({json.dumps(v) for v in value}) != len(value):
            raise ConfigError(f"search space: {name}: give two or more distinct choices")
        return Param(name, "choice", choices=tuple(value))
    if (
        not isinstance(value, dict)
        or not value.keys() <= RANGE_KEYS
        or not {"low", "high"} <= value.keys()
    ):
        raise ConfigError(
            f"search space: {name}: give {{low, high[, log, step]}}, a list of choices, or "
            "'LOW:HIGH[:log]'"
        )
    return _range_param(name, kind, value)


def _range_param(name: str, kind: str, value: dict[str, Any]) -> Param:
    if kind not in ("int", "float"):
        raise ConfigError(f"search space: {name} is a {kind} setting: give choices, not a range")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise ConfigError(f"search space: {name}: low, high and step must be numbers")
    if not all(math.isfinite(v) for v in numbers) or not isinstance(log, bool):
        raise ConfigError(f"search space: {name}: finite numbers and log true/false only")
    if kind == "int" and not all(float(v).is_integer() for v in numbers):
        raise ConfigError(f"search space: {name} is a whole number: give whole bounds")
    if not low < high:
        raise ConfigError(f"search space: {name}: low {low} must be below high {high}")
    if log and low <= 0:
        raise ConfigError(f"search space: {name}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"search space: {name}: step must be > 0, and not with log")
    return Param(name, kind, low, high, log, step)


def read_space_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON or YAML (.yaml/.yml) object: setting name -> range or choices."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"search space file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read search space file {path}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, yaml's errors are not ValueErrors
        raise ConfigError(f"search space file {path} is not valid JSON: {exc}") from None
    except Exception as exc:  # yaml.YAMLError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"search space file {path} is not valid YAML: {first}") from None
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"search space file {path} must hold an object: setting -> range")
    return values


def build_space(
    base: Any, space: dict[str, Any] | None = None, flags: list[str] | None = None
) -> list[Param]:
    """The search space from a file's object and `--search` flags (the flags win), each
    bound and choice checked against the settings' own rules with `base` (a TrainConfig)."""
    entries = dict(space or {})
    for text in flags or []:
        name, spec = parse_search_flag(text)
        entries[name] = spec
    if not entries:
        raise ConfigError("give a search space: --search lr=0.01:0.4:log, or --space FILE")
    kinds = _kinds()
    params = [_param(str(name), value, kinds) for name, value in entries.items()]
    for p in params:
        for value in p.choices or (p.low, p.high):
            try:
                base.replace(**{p.name: value})
            except ConfigError as exc:
                raise ConfigError(f"search space: {p.name}={value!r}: {exc}") from None
    return params


# ---------------------------------------------------------------- the study


def _masked(url: str) -> str:
    """A storage URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_study(name: str, storage: str, optuna: Any, pruner: Any) -> Any:
    """The study `name` in `storage`, created or loaded; ConfigError when the storage cannot
    be reached."""
    import warnings

    try:
        with warnings.catch_warnings():
            # the heartbeat (a killed worker's trial marked failed) is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=60, grace_period=180)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open the study storage {_masked(storage)}: {message}") from None
    return optuna.create_study(
        study_name=name,
        storage=rdb,
        direction="maximize",
        pruner=pruner,
        load_if_exists=True,
    )


def finished(study: Any, optuna: Any) -> int:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


class PruningCallbacks(TrainCallbacks):
    """Reports each epoch's validation top-1 to the trial; raises TrialPruned when the pruner
    says so (after the epoch's checkpoint and metrics row are written)."""

    def __init__(self, trial: Any, optuna: Any) -> None:
        self.trial, self.optuna = trial, optuna

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        value = row.get("val_top1")
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), int(row["epoch"]))
        if self.trial.should_prune():
            raise self.optuna.TrialPruned(f"pruned at epoch {row['epoch']} ({value:.2f}%)")


@dataclass
class TuneResult:
    """The study's trials as rows (best first), the best trial's settings and where the best
    --config file went; `interrupted` when Ctrl-C ended this worker's search."""

    study: str
    folder: Path
    rows: list[dict[str, Any]]
    params: list[str]
    best: dict[str, Any] | None
    best_config: Path | None
    interrupted: bool = False
    ran: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def trial_rows(study: Any, params: list[str]) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, the searched values, epochs, run folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        last_epoch = max(t.intermediate_values) if t.intermediate_values else None
        row = {"trial": t.number, "state": t.state.name.lower(), "val_top1": t.value}
        row |= {p: t.params.get(p) for p in params}
        row |= {"epochs": last_epoch, "run": t.user_attrs.get("run", "")}
        row["base"] = bool(t.user_attrs.get("base", False))
        rows.append(row)
    done = [r for r in rows if r["val_top1"] is not None and r["state"] == "complete"]
    rest = [r for r in rows if r not in done]
    return sorted(done, key=lambda r: -r["val_top1"]) + rest


def tune(
    base: Any,
    space: list[Param],
    *,
    trials: int = 20,
    study_name: str = "tune",
    storage: str | None = None,
    prune: bool = True,
    pruner: Any = None,
    best_config: str | os.PathLike | None = None,
    callbacks_for: Callable[[int, dict[str, Any]], TrainCallbacks | None] | None = None,
) -> TuneResult:
    """Search `space` (see build_space) around `base` (a TrainConfig with a validation split)
    until the study holds `trials` finished trials, each trained into
    base.runs_dir/<study_name>/trial-NNNN/. Returns the trials and writes the best settings as
    a --config file (`best_config`, default that folder's best_config.json). Ctrl-C (a
    stopped trial) ends the search with the finished trials kept: `interrupted` is set."""
    optuna = import_optuna()
    if base.val_size <= 0:
        raise ConfigError("tune optimises the validation top-1: give --val-size > 0")
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    folder = Path(base.runs_dir) / study_name
    if storage is None:  # the SQLite file in the study's folder
        _make_folder(folder)
        storage = f"sqlite:///{folder.resolve() / 'study.db'}"
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if not prune:
        pruner = optuna.pruners.NopPruner()
    study = open_study(study_name, storage, optuna, pruner)
    _enqueue_base(study, space, base)
    _make_folder(folder)
    _write_study_file(folder, study_name, storage, space, base)
    objective = _objective(base, space, folder, optuna, callbacks_for)
    result = TuneResult(study_name, folder, [], [p.name for p in space], None, None)
    before = finished(study, optuna)
    stop_at = optuna.study.MaxTrialsCallback(
        trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    )
    try:
        if before < trials:
            study.optimize(objective, n_trials=trials - before, callbacks=[stop_at])
    except (TrainingInterrupted, KeyboardInterrupt):
        result.interrupted = True
    result.ran = finished(study, optuna) - before
    return _finish(result, study, base, best_config)


def _enqueue_base(study: Any, space: list[Param], base: Any) -> None:
    """A new study's first trial: the base settings' own values, when the space holds them,
    so the search is measured against them on the same budget."""
    if study.get_trials(deepcopy=False):
        return
    values = {p.name: getattr(base, p.name) for p in space}
    inside = all(
        v in p.choices if p.kind == "choice" else p.low <= v <= p.high
        for p, v in ((p, values[p.name]) for p in space)
    )
    if inside:
        study.enqueue_trial(values, user_attrs={"base": True}, skip_if_exists=True)


def _make_folder(folder: Path) -> None:
    from cifarnet.errors import OutputError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the study folder {folder}: {exc.strerror or exc}"
        ) from None


def _write_study_file(folder: Path, name: str, storage: str, space: list[Param], base: Any) -> None:
    from cifarnet.io.atomic import atomic_write

    payload = {
        "study": name,
        "storage": _masked(storage),
        "space": {p.name: p.describe() for p in space},
        "base_settings": base.to_dict(),
    }
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(folder / STUDY_FILE, lambda f: f.write(text.encode()))


def _objective(
    base: Any,
    space: list[Param],
    folder: Path,
    optuna: Any,
    callbacks_for: Callable[[int, dict[str, Any]], TrainCallbacks | None] | None,
) -> Callable[[Any], float]:
    from cifarnet.training.tensorboard import ComposedCallbacks
    from cifarnet.training.trainer import train

    def objective(trial: Any) -> float:
        values = {p.name: p.suggest(trial) for p in space}
        name = f"trial-{trial.number:04d}"
        trial.set_user_attr("run", name)
        config = base.replace(**values, runs_dir=str(folder), name=name)
        shown = callbacks_for(trial.number, values) if callbacks_for is not None else None
        pruning = PruningCallbacks(trial, optuna)
        callbacks = ComposedCallbacks(shown, pruning) if shown is not None else pruning
        try:
            summary = train(config, callbacks=callbacks)
        finally:
            close = getattr(shown, "close", None)
            if close is not None:
                close()
        trial.set_user_attr("run", Path(summary["run_dir"]).name)
        value = summary.get("best_val_top1")
        if value is None:
            raise ConfigError("the trial had no validation top-1")
        return float(value)

    return objective


def _finish(result: TuneResult, study: Any, base: Any, best_config: Any) -> TuneResult:
    """The rows, the best trial, and the best settings written as a --config file."""
    from cifarnet.io.atomic import atomic_write
    from cifarnet.io.tables import make_parent, write_csv

    result.rows = trial_rows(study, result.params)
    write_csv(result.rows, result.folder / "trials.csv")
    complete = [r for r in result.rows if r["state"] == "complete"]
    if not complete:
        return result
    best = complete[0]
    result.best = best
    settings = base.replace(**{p: best[p] for p in result.params if best[p] is not None})
    values = {**settings.to_dict(), "name": None, "runs_dir": base.runs_dir}
    path = Path(best_config) if best_config is not None else result.folder / "best_config.json"
    make_parent(path)
    text = json.dumps(values, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    result.best_config = path
    return result
