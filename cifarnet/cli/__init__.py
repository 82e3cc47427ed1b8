"""The `cifarnet` command line: a thin Typer layer over the library. No torch import here.

Importing a command module registers its commands on `app`, and `cifarnet --help` lists them
in that order: train first.
"""

from cifarnet.cli import train_command  # noqa: F401

# isort: split
from cifarnet.cli import task_commands  # noqa: F401

# isort: split
from cifarnet.cli import experiment_commands  # noqa: F401
from cifarnet.cli.app import app, main

__all__ = ["app", "main"]
