"""What the store says when it refuses a write or cannot be used: one line, and what to do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class StoreError(ValueError):
    """A write was refused, or the store cannot be used; nothing was written. The message says what to do."""

    full_disk = False  # the disk under the store (or under its database server) is full
    unavailable = False  # the database cannot be reached or did not answer in time: the same request may pass later


class StoreFullError(StoreError):
    """The disk under the store is full; nothing was written."""

    full_disk = True


class StoreUnavailableError(StoreError):
    """The store's database cannot be reached, or did not answer in time; nothing was written."""

    unavailable = True


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


def no_space_left(folder: Path) -> bool:
    """Whether the disk holding ``folder`` has (almost) no space left for a writer."""
    try:
        status = os.statvfs(folder)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < 1 << 20


def postgres_error(database: str, error: BaseException) -> StoreError:
    """What went wrong with the PostgreSQL store ``database`` (shown without password), in one line."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    sqlstate = getattr(error, "sqlstate", None) or ""
    if sqlstate.startswith("23"):  # integrity: a rule of the schema, or a trigger's refusal
        return StoreError(f"refused by the store: {text}")
    if sqlstate == "53100":
        return StoreFullError(f"the disk of the store's database {database} is full ({text}): nothing was written")
    if sqlstate == "57014":  # canceled: MNIST_HITL_DATABASE_STATEMENT_TIMEOUT
        return StoreUnavailableError(
            f"the store's database {database} did not answer in time ({text}): nothing was written; try again"
        )
    if sqlstate.startswith(("08", "57P", "53")) or not sqlstate:
        return StoreUnavailableError(
            f"cannot reach the store's database {database} ({text}): check MNIST_HITL_DATABASE_URL and the server"
        )
    if sqlstate in ("55P03", "40P01", "40001"):
        return StoreUnavailableError(f"the store {database} stayed locked by another writer ({text}): try again")
    return StoreError(f"the store {database} failed: {text}")


def sqlite_error(path: Path, error: sqlite3.Error) -> StoreError:
    """What went wrong with the store at ``path``, and what to do, in one line."""
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError):
        return StoreError(f"refused by the store: {text}")
    if blocked := unwritable(path):
        return StoreError(read_only(blocked))
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and no_space_left(path.parent)):
        return StoreFullError(
            f"the disk holding the store {path} is full ({text}): nothing was written; free some space"
        )
    if "locked" in text or "busy" in text:
        return StoreUnavailableError(
            f"the store {path} stayed locked by another process for longer than the timeout ({text}): try again"
        )
    if "not a database" in text or "malformed" in text:
        return StoreError(f"{path} is not a usable SQLite store ({text}): move it aside, or put a backup in its place")
    if "unable to open" in text:
        return StoreError(
            f"cannot open the store {path} ({text}): check that its folder exists and this user can write it"
        )
    return StoreError(f"the store {path} failed: {text}")
