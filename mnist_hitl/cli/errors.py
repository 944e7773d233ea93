"""How every ``mnist-hitl`` command fails: one line on stderr, never a traceback, and a known exit status.

Whatever it is given, a command ends with status 0, 1 (refused, or failed) or 2 (a command line it
cannot parse, or a bad setting): :func:`fail` says why a command refuses, :class:`OneLineErrors` catches
what the commands do not.
"""

from __future__ import annotations

import errno
import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """The command group, reporting every error in one line: usage errors exit 2, the others 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as error:  # the last place where a traceback can become one line
            message, status = _one_line(error)
            if message is not None:
                say(message)
        sys.exit(status if isinstance(status, int) else 0)


def _one_line(error: Exception) -> tuple[str | None, int]:
    """The message and exit status for an error that reached the top of a command."""
    from mnist_hitl.config import SettingsError
    from mnist_hitl.store import StoreError

    if type(error).__name__ == "NoArgsIsHelpError":  # no arguments at all: show the help, as usual
        error.show()
        return None, 2
    if hasattr(error, "format_message") and hasattr(error, "exit_code"):  # click's usage and parameter errors
        context = getattr(error, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        return error.format_message() + hint, error.exit_code
    if isinstance(error, SettingsError):
        return str(error), 2
    if isinstance(error, StoreError):
        return str(error), 1
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full ({error.strerror}){f': {error.filename}' if error.filename else ''}", 1
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror, 1
    if type(error).__name__ == "Abort":  # typer's or click's
        return "aborted", 1
    first_line = (str(error).splitlines() or [""])[0]
    return f"unexpected {type(error).__name__}: {first_line}", 1


def say(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr, on one line whatever the message holds (a file name's newlines)."""
    typer.echo("error: " + " ".join(message.splitlines()), err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with ``error: MESSAGE`` on stderr and exit status ``code``."""
    say(message)
    raise typer.Exit(code)
