"""`python -m cifarnet` runs the command-line interface."""

from cifarnet.cli import main

main()
