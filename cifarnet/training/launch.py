"""`cifarnet train --nproc N`: a distributed run on this machine, started through torchrun's own
launcher (torch.distributed.run), exactly as `torchrun --standalone --nproc-per-node N -m cifarnet
train ...` would start it, with the command's exit code made the usual one."""

from __future__ import annotations

import logging
import os


def launch(nproc: int, train_args: list[str], debug: bool = False) -> int:
    """Run `python -m cifarnet train *train_args` as `nproc` processes of one run on this
    machine and wait for them. Returns the exit code: 0, 128 + the signal number when this
    process was stopped by one (after the processes saved and stopped), else the processes'
    own (the first of rank 0's, then the others', non-zero), or 1 when they were killed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:
        # the cores shared out between the processes (torchrun would set 1, with a warning)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    if not debug:
        # the processes report their own errors in one line; the launcher's log of the same
        # failure (and its traceback) would bury it
        _quiet_loggers("torch.distributed")
    args = ["--standalone", "--nproc-per-node", str(nproc), "--module", "cifarnet", "train"]
    try:
        run(parse_args([*args, *train_args]))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        codes = [exc.failures[rank].exitcode for rank in sorted(exc.failures)]
        own = [code for code in codes if code > 0]  # negative: killed by a signal
        return own[0] if own else 1
    return 0


def _quiet_loggers(prefix: str) -> None:
    """Silence the loggers under `prefix`, as they are; each set its own level (from $LOGLEVEL)
    when torch.distributed.elastic's modules were imported."""
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logging.getLogger(name).setLevel(logging.CRITICAL)
