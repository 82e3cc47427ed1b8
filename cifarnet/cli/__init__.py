"""The `cifarnet` command line: a thin Typer layer over the library. No torch import here."""

from cifarnet.cli.app import app, main

__all__ = ["app", "main"]
