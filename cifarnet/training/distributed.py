"""Data-parallel training over torch.distributed: a run started by torchrun (or by `cifarnet
train --nproc N`, through torchrun's own launcher) trains one model on several processes.

torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) makes a run
distributed. Each process holds the whole uint8 training set on its device, draws the epoch's
one permutation from the shared seed and takes its slice of each global batch (--batch-size);
DistributedDataParallel averages the gradients. Validation and the test pass are split across
the processes and their sums added. Rank 0 alone writes the run folder and reports; the others
follow its decisions: every stop (a signal, --time, a NaN loss) is agreed at a sync point, so
that all processes end at the same step. A lost process makes the others stop with one line
within --dist-timeout seconds.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cifarnet.config.settings import TrainConfig, flag_name
from cifarnet.errors import CifarnetError, ConfigError, DataError, DistributedError, one_line
from cifarnet.training.callbacks import TrainCallbacks
from cifarnet.training.signals import SIGPIPE, StopFlag
from cifarnet.training.state import EpochSums, Progress
from cifarnet.training.sync_batchnorm import convert_sync_batchnorm
from cifarnet.training.tensorboard import with_tensorboard

T = TypeVar("T")

# what torchrun sets for each process it starts
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# the stops a signal asks for, in the order one is chosen when processes got different ones
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, SIGPIPE)
# settings a process may have of its own: the data folder (its copy's fingerprint is compared)
_OWN_SETTINGS = ("data_dir",)


def launched() -> bool:
    """Whether torchrun (or a launcher like it) started this process as part of a run."""
    return "WORLD_SIZE" in os.environ


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run. A single-process run is rank 0 of 1, not `enabled`,
    and every method is then the identity or does nothing."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and reports."""
        return self.rank == 0

    def callbacks(self, callbacks: TrainCallbacks, config: TrainConfig) -> TrainCallbacks:
        """The run's callbacks on rank 0 (with TensorBoard's when asked for); silent ones on the
        other processes."""
        return with_tensorboard(callbacks, config) if self.is_main else TrainCallbacks()

    def prepare(self, model: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
        """`model` with synchronised BatchNorm when --sync-bn asks for it."""
        if not config.sync_bn:
            return model
        return convert_sync_batchnorm(model, cuda=device.type == "cuda")

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The training forward pass: DistributedDataParallel around `model` (which it keeps
        unwrapped for evaluation and checkpoints), whose backward averages the gradients."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [torch.cuda.current_device()] if device.type == "cuda" else None  # LOCAL_RANK's
        return DistributedDataParallel(model, device_ids=ids)

    def seed(self, seed: int, step: int = 0) -> None:
        """Seed this process's own random draws (dropout, ...) apart from rank 0's, which keeps
        --seed's (and a resumed run's saved state): identical draws on every process would
        repeat the same dropout masks across their shares of a batch."""
        if self.rank > 0:
            torch.manual_seed((seed + 1_000_003 * self.rank) * 1_000_003 + step)

    def share(self, partial: dict[str, float]) -> dict[str, float]:
        """Of the epoch's sums saved mid-epoch (global sums), the part this process starts
        from: all of them on rank 0, none elsewhere, so that their total stays the saved one."""
        return partial if self.is_main else {}

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` added over the processes (in place)."""
        if self.enabled:
            dist.all_reduce(values)
        return values

    def reduce_step(self, sums: EpochSums, progress: Progress, stop: StopFlag) -> EpochSums:
        """A sync point: one all_reduce of the epoch's sums, rank 0's clock and every stop
        request. Returns the epoch's global sums (with rank 0's seconds); `progress`'s timings
        become rank 0's and `stop.agreed` the stop any process was asked for (by then), so
        that every process takes the same decisions from here."""
        if not self.enabled:
            return sums
        main = 1.0 if self.is_main else 0.0
        p = progress
        wanted = [float(stop.signal_number == s) for s in _STOP_SIGNALS]
        # (3 sums, 4 of rank 0's seconds, one count per stop signal); float64 keeps the counts
        # of images exact and the seconds to the microsecond
        clock = [p.elapsed_seconds, p.last_step_seconds, p.epoch_end_seconds, sums.seconds]
        local = torch.stack(
            [
                sums.loss_sum.to(torch.float64),
                sums.correct.to(torch.float64),
                torch.tensor(float(sums.count), dtype=torch.float64, device=sums.loss_sum.device),
            ]
        )
        rest = torch.tensor([main * t for t in clock] + wanted, dtype=torch.float64)
        total = torch.cat([local, rest.to(local.device)])
        dist.all_reduce(total)
        v = total.tolist()
        p.elapsed_seconds, p.last_step_seconds, p.epoch_end_seconds = v[3:6]
        asked = [s for s, count in zip(_STOP_SIGNALS, v[7:], strict=True) if count > 0]
        # (not this process's own signal: only a second one it receives aborts at once)
        stop.agreed = int(asked[0]) if asked else None
        device = sums.loss_sum.device
        return EpochSums(
            torch.tensor(v[0], device=device), torch.tensor(v[1], device=device), int(v[2]), v[6]
        )

    def stop_asked(self, stop: StopFlag) -> int | None:
        """The stop to act on here: the signal received or, in a distributed run, the one its
        processes agreed on at the last sync point (one that reached this process since then
        waits for the next)."""
        return stop.agreed if self.enabled else stop.signal_number

    def broadcast_model(self, module: nn.Module) -> None:
        """Rank 0's weights and buffers (BatchNorm statistics) into every process's `module`:
        what is evaluated is then what rank 0 saves."""
        if self.enabled:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def on_main(self, work: Callable[[], T]) -> T:
        """`work()` done on rank 0 alone (creating the run folder, reading best.pt); every
        process gets its result, or a CifarnetError of its failure (any exception: the others
        must not wait for a result that never comes)."""
        if not self.enabled:
            return work()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", work())
            except Exception as exc:
                box[0] = ("error", one_line(exc))
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        outcome, value = box[0]
        if outcome == "error":
            raise CifarnetError(value)  # rank 0 reports it
        return value

    def check_same_settings(self, config: TrainConfig) -> None:
        """Refuse a run whose processes were started with different settings (but for each
        one's data folder), on every process."""
        if not self.enabled:
            return
        mine = {k: v for k, v in config.to_dict().items() if k not in _OWN_SETTINGS}
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        for rank, theirs in enumerate(everyone):
            differ = [k for k in mine if theirs.get(k) != everyone[0].get(k)]
            if differ:
                name, first = differ[0], everyone[0]
                raise ConfigError(
                    f"the processes were started with different settings: rank {rank} has "
                    f"{flag_name(name)} {theirs.get(name)!r}, rank 0 has {first.get(name)!r}; "
                    "start every process with the same command"
                )

    def check_same_data(self, fingerprint: str | None, dataset: str) -> None:
        """Refuse a run whose processes read different training data (another copy, or
        another order: the validation split and the batches would differ)."""
        if not self.enabled:
            return
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, fingerprint)
        for rank, theirs in enumerate(everyone):
            if theirs != everyone[0]:
                raise DataError(
                    f"rank {rank} read other {dataset} training images than rank 0 (another "
                    "copy, or another order); give every process the same data (--data-dir)"
                )


def _environment_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; one line when any is off."""
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is set but {', '.join(missing)} not: start distributed runs with "
            "torchrun (or cifarnet train --nproc N), or unset WORLD_SIZE"
        )
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not in 0..{world - 1} (WORLD_SIZE {world})")
    return rank, world, local


def _process_device(config: TrainConfig, local_rank: int) -> torch.device:
    """The device of this process: its own GPU (LOCAL_RANK) on CUDA, else the CPU."""
    from cifarnet.runtime.device import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda":
        if device.index is not None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                f"--device {config.device} names one GPU, but each process of a distributed "
                "run takes the GPU of its LOCAL_RANK; use --device cuda or auto"
            )
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} has no GPU: only {torch.cuda.device_count()} here; "
                "start at most that many processes on this machine"
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if device.type != "cpu":
        raise ConfigError(f"--device {config.device}: distributed runs use CUDA GPUs or the CPU")
    return device


def _backend(config: TrainConfig, device: torch.device) -> str:
    """--backend: auto is nccl on CUDA and gloo on the CPU."""
    if config.backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if config.backend == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"--backend nccl needs CUDA GPUs, and this run is on the {device.type}; "
            "use --backend gloo (or auto)"
        )
    return config.backend


def check_single_process(config: TrainConfig) -> None:
    """Refuse the settings that mean something only in a distributed run."""
    if config.sync_bn:
        raise ConfigError(
            "--sync-bn needs a distributed run: start it with torchrun --nproc-per-node N "
            "-m cifarnet train ... (or cifarnet train --nproc N)"
        )


def _check_batch(config: TrainConfig, world_size: int) -> None:
    if config.batch_size % world_size:
        lower = config.batch_size // world_size * world_size
        hint = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise ConfigError(
            f"--batch-size {config.batch_size} is the global batch and must be a multiple of "
            f"the {world_size} processes (e.g. {hint})"
        )


@contextlib.contextmanager
def joined(config: TrainConfig) -> Iterator[Distributed]:
    """This process's part in the run `config` describes: the process group joined (when
    torchrun started it and nobody joined it yet), the processes' settings compared, and the
    group left at the end. torch.distributed's failures become one DistributedError line."""
    if not launched():
        check_single_process(config)
        yield Distributed()
        return
    rank, world, local = _environment_rank()
    device = _process_device(config, local)
    backend = _backend(config, device)
    own_group = not dist.is_initialized()
    with collectives_checked(config):
        if own_group:
            _init_process_group(backend, config.dist_timeout, device)
        try:
            context = Distributed(rank, world, local, enabled=True)
            context.check_same_settings(config)
            _check_batch(config, world)
            yield context
        finally:
            if own_group:
                # after a lost process the group may fail to close: the run's own error stands
                with contextlib.suppress(RuntimeError):
                    dist.destroy_process_group()


def _init_process_group(backend: str, timeout: float, device: torch.device) -> None:
    """Join the processes of the run; ones that are not all there within `timeout` seconds
    make one line."""
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout),
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError, TimeoutError) as exc:
        raise DistributedError(
            f"could not join the {os.environ['WORLD_SIZE']} processes of the run at {address} "
            f"within --dist-timeout {timeout:g} s ({_cause(exc)}); start them all with the same "
            "torchrun command"
        ) from None


def _cause(exc: BaseException) -> str:
    """torch.distributed's message, without its source location, on one short line."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", one_line(exc, limit=1000))
    return one_line(RuntimeError(text), limit=120)


_COLLECTIVE_FAILURE = re.compile(r"gloo|nccl|c10d|ProcessGroup|Connection (reset|closed)", re.I)


def lost_contact(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed: a process gone or past the timeout."""
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and bool(_COLLECTIVE_FAILURE.search(str(exc)))


@contextlib.contextmanager
def collectives_checked(config: TrainConfig) -> Iterator[None]:
    """A collective that fails (a process stopped, was killed or waited past --dist-timeout)
    becomes one DistributedError line."""
    try:
        yield
    except RuntimeError as exc:
        if not lost_contact(exc):
            raise
        raise DistributedError(
            f"lost contact with the other processes of the run ({_cause(exc)}): one stopped "
            f"(see its error), was killed, or waited more than --dist-timeout "
            f"{config.dist_timeout:g} s"
        ) from None
