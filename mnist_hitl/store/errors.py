"""What the store says when it refuses a write or cannot be used: one line, and what to do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class StoreError(ValueError):
    """A write was refused, or the store cannot be used; nothing was written. The message says what to do."""


class DuplicateError(StoreError):
    """The picture is in the store already (an import of the same picture); nothing was written.

    Args:
        message: for a person.
        prediction_id: the prediction that holds the picture.
    """

    def __init__(self, message: str, prediction_id: int) -> None:
        super().__init__(message)
        self.prediction_id = prediction_id


def unwritable(path: Path) -> list[Path]:
    """What keeps this user from writing the store: read-only files, or a read-only folder where one is missing."""
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    blocked = [file for file in files if file.exists() and not os.access(file, os.W_OK)]
    if not all(file.exists() for file in files) and not os.access(path.parent, os.W_OK | os.X_OK):
        blocked.insert(0, path.parent)
    return blocked


def read_only(blocked: list[Path]) -> str:
    return (
        f"the store is read-only for this user: {', '.join(map(str, blocked))} cannot be written; make"
        f" {'it' if len(blocked) == 1 else 'them'} writable (chmod u+w), or set MNIST_HITL_HOME to another folder"
    )


def explain_postgres(database: str, error: BaseException) -> str:
    """One line saying what went wrong with the PostgreSQL store ``database`` (shown without password)."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    sqlstate = getattr(error, "sqlstate", None) or ""
    if sqlstate.startswith("23"):  # integrity: a rule of the schema, or a trigger's refusal
        return f"refused by the store: {text}"
    if sqlstate.startswith(("08", "57P")) or not sqlstate:
        return f"cannot reach the store's database {database} ({text}): check MNIST_HITL_DATABASE_URL and the server"
    if sqlstate in ("55P03", "40P01", "40001"):
        return f"the store {database} stayed locked by another writer ({text}): try again"
    return f"the store {database} failed: {text}"


def explain(path: Path, error: sqlite3.Error) -> str:
    """One line saying what went wrong with the store at ``path``, and what to do."""
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError):
        return f"refused by the store: {text}"
    if blocked := unwritable(path):
        return read_only(blocked)
    if "locked" in text or "busy" in text:
        return f"the store {path} stayed locked by another process for longer than the timeout ({text}): try again"
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a usable SQLite store ({text}): move it aside, or put a backup in its place"
    if "unable to open" in text:
        return f"cannot open the store {path} ({text}): check that its folder exists and this user can write it"
    return f"the store {path} failed: {text}"
