"""A backup of a SQLite store: one consistent snapshot in one file, checked, then put in place."""

from __future__ import annotations

import errno
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from mnist_hitl.store.errors import StoreError, StoreFullError, no_space_left
from mnist_hitl.store.rows import count_rows


def backup_sqlite(path: Path, target: Path) -> dict[str, int]:
    """Copy the SQLite store ``path`` to ``target`` with SQLite's online backup; returns the copy's counts.

    The copy is one consistent snapshot (writers carry on meanwhile, in WAL mode) in a single
    file (no ``-wal``), written beside ``target``, checked with ``PRAGMA integrity_check``, then
    renamed over it: a failed backup leaves ``target`` as it was.
    """
    if target.exists() and target.resolve() == path.resolve():
        raise StoreError("a backup must go to another file than the store itself")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        with (
            closing(sqlite3.connect(partial, isolation_level=None)) as copy,
            closing(sqlite3.connect(path, isolation_level=None)) as source,
        ):
            source.backup(copy)  # every page in one step: one read transaction, one snapshot
            copy.execute("PRAGMA journal_mode = DELETE")
            verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                raise StoreError(f"the backup failed its integrity check ({verdict}); nothing was replaced")
            counts = count_rows(copy)
        os.replace(partial, target)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, sqlite3.Error | OSError):
            raise _backup_error(target, error) from error
        raise
    return counts


def _backup_error(target: Path, error: sqlite3.Error | OSError) -> StoreError:
    """What stopped a backup to ``target``; nothing was replaced."""
    name = getattr(error, "sqlite_errorname", "")
    full = name == "SQLITE_FULL" or getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    if full or ((name.startswith("SQLITE_IOERR") or name == "SQLITE_CANTOPEN") and no_space_left(target.parent)):
        return StoreFullError(
            f"the backup to {target} failed: the disk holding {target.parent} is full; nothing was replaced"
        )
    if not target.parent.is_dir():
        return StoreError(f"the backup to {target} failed: the folder {target.parent} does not exist")
    if isinstance(error, OSError):
        return StoreError(f"the backup to {target} failed: {error.strerror or error}; nothing was replaced")
    return StoreError(
        f"the backup to {target} failed ({error}): check that its folder exists and this user can write it"
    )
