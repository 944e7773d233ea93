"""The ``mnist-hitl`` command: one typer app holding every family of commands.

Heavy libraries are imported inside each command, so ``predict``, ``correct``
and ``status`` start in a fraction of a second and never import TensorFlow.
Whatever it is given, the command ends with status 0, 1 or 2 and says why in one line
on stderr (:mod:`mnist_hitl.cli.errors`).
"""

from __future__ import annotations

import typer

from mnist_hitl.cli.errors import OneLineErrors
from mnist_hitl.cli.learning import commands as learning_commands
from mnist_hitl.cli.serving import commands as serving_commands
from mnist_hitl.cli.workbench import commands as workbench_commands

app = typer.Typer(
    help="mnist-hitl: draw digits, correct the model, let it learn.",
    no_args_is_help=True,
    add_completion=False,
    cls=OneLineErrors,
)
for family in (workbench_commands, learning_commands, serving_commands):
    app.add_typer(family)


# A person's commands: one answer, or one line saying what is wrong.
PERSONS_COMMANDS = {command.name or command.callback.__name__ for command in workbench_commands.registered_commands}


def main() -> None:
    """Run the command; a bad setting in the environment stops it with one line (exit status 2)."""
    import logging
    import sys

    from mnist_hitl.config import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    if sys.argv[1:2] and sys.argv[1] in PERSONS_COMMANDS:
        # Metrics kept in memory (a full disk) is the servers' news: a person's command says what
        # went wrong with it, in its one line (the full disk, when the store is on it).
        logging.getLogger("mnist_hitl.metrics").setLevel(logging.ERROR)
    app()
