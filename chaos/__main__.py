"""`python -m chaos`: the `drainspec` command, for environments whose scripts directory is not on PATH."""

from chaos.cli import command

command()
