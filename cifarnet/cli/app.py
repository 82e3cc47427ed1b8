"""The `cifarnet` Typer app: --version, the console, and errors turned into exit codes.

The commands live in train_command and task_commands (cifarnet.cli imports them, which
registers them here). Nothing in cli/ imports torch at module level, so `cifarnet --help` stays
instant; each command imports the library modules it needs when it runs.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from cifarnet import __version__
from cifarnet.errors import CifarnetError, CifarnetWarning

app = typer.Typer(
    name="cifarnet",
    help="Train, evaluate, run and export residual networks on CIFAR-100 and CIFAR-10.\n\n"
    "Example: cifarnet train --epochs 70",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: at 80 columns an option's names are never cut (a long one puts its
    # help on the next line), and a flag shows no value placeholder
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cifarnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Train, evaluate, run and export residual networks on CIFAR-100 and CIFAR-10."""


def console(stderr: bool = False) -> Any:
    """A console for stdout (or stderr) that survives a closed pipe."""
    from cifarnet.cli.render import PipeSafeConsole

    out = PipeSafeConsole(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        # logs and pipes: one line per record, never cut at 80 columns (tables take only the
        # width their cells need)
        out.width = 10_000
    return out


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    if not issubclass(category, CifarnetWarning):
        # the stack's own (deprecations, exporter and compiler internals) differ from one
        # torch release to the next and say nothing the user can act on: --debug shows them
        return
    from rich.markup import escape

    from cifarnet.io.untrusted import printable

    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    text = printable(text)
    with contextlib.suppress(BrokenPipeError):  # stderr's reader has gone: nobody to warn
        console(stderr=True).print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True)


def _secondary_rank() -> int | None:
    """This process's rank when it is one of a distributed run's (torchrun's variables) other
    than rank 0, which alone reports what every process meets alike."""
    import os

    rank = os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"
    return int(rank) if rank.isdigit() and rank != "0" else None


def _report(line: str, exc: BaseException) -> None:
    """Print `line` on stderr, on a distributed run's rank 0, or on another rank for an error
    of its own (prefixed with its rank)."""
    rank = _secondary_rank()
    if rank is not None:
        if not getattr(exc, "own_to_process", False):
            return
        line = f"rank {rank}: {line}"
    # a closed stderr loses the line, never the exit code
    with contextlib.suppress(BrokenPipeError):
        console(stderr=True).print(line, soft_wrap=True)


@contextlib.contextmanager
def handle_errors(
    debug: bool = False, abort_note: Callable[[], str] | None = None
) -> Iterator[None]:
    """CifarnetError -> one red line on stderr and its exit code (1, or 128 + the signal number
    when training was stopped: 130, 143, or 141 for a closed output); cifarnet's warnings -> one
    yellow line each. Tracebacks, warnings' source lines, other libraries' warnings and their
    log records below ERROR (torch.compile's symbolic-shape notes) only with --debug.
    `abort_note()` (asked when Ctrl-C ends the command) follows "aborted". A closed stderr loses
    the line, never the exit code."""
    try:
        with warnings.catch_warnings(), _library_logs(shown=debug):
            if _secondary_rank() is not None:
                warnings.simplefilter("ignore")  # rank 0 shows the same warnings
            elif not debug:
                warnings.showwarning = _one_line_warning
            yield
    except CifarnetError as exc:
        if debug:
            traceback.print_exc()
        from cifarnet.cli.render import shown

        # escaped: a message may hold brackets (paths, "pip install 'cifarnet[onnx]'") and
        # text from the files read (class names, file names), shown without control characters
        _report(f"[bold red]error:[/] {shown(exc)}", exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        # files are replaced atomically, so nothing is left half-written
        from cifarnet.cli.render import shown

        note = abort_note() if abort_note else ""
        note = f" ({shown(note)})" if note else ""
        _report(f"[bold red]aborted[/]{note}", exc)
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None  # 143 for a second SIGTERM


@contextlib.contextmanager
def _library_logs(shown: bool) -> Iterator[None]:
    """Unless `shown`, drop log records below ERROR for the command's duration: the library
    never logs (it reports through return values and callbacks), so these are torch's,
    onnxscript's and the like, which install their own handlers on import."""
    if shown:
        yield
        return
    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(before)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cifarnet")
