"""How the store reaches its database: the engine, one connection at a time, three kinds of use, migrations.

:class:`StoreAccess` is the part of :class:`~mnist_hitl.store.database.Store` that knows nothing of
predictions or labels. It opens the engine (:mod:`mnist_hitl.store.engine`), brings an older
schema up to date when the store is opened (:mod:`mnist_hitl.store.schema`), and lends a
connection for a read, for one write statement or for one write transaction. On SQLite that is
the store's one held connection, under a lock, so threads sharing a store take turns and their
transactions never interleave; on PostgreSQL a connection from the process's pool.

Every database failure reaches the caller as a :class:`StoreError` saying what to do. A
read-only SQLite store is refused before SQLite opens it, which would leave read-only ``-wal``
and ``-shm`` files behind that keep failing once the store is writable again.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import sqlalchemy.exc
from sqlalchemy import Connection, text

from mnist_hitl.config import get_settings
from mnist_hitl.store.engine import WRITE, is_url, postgres_engine, shown, sqlite_engine
from mnist_hitl.store.errors import (
    StoreError,
    StoreUnavailableError,
    postgres_error,
    read_only,
    sqlite_error,
    unwritable,
)
from mnist_hitl.store.schema import SCHEMA_VERSION, migration, read_schema_version


def database_errors(method: Callable) -> Callable:
    """Raise the method's database errors as StoreErrors that say what to do."""

    @functools.wraps(method)
    def translated(self: StoreAccess, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlalchemy.exc.DBAPIError as error:
            raise self._error(error.orig) from error
        except sqlalchemy.exc.TimeoutError as error:  # no pooled connection came free in time
            raise StoreUnavailableError(f"every connection to the store is busy ({error}): try again") from error

    return translated


class StoreAccess:
    """An open store's database, brought to the current schema; cheap to create.

    Args:
        location: the SQLite file (its folder is created if needed), or a
            ``postgresql+psycopg://`` URL (``MNIST_HITL_DATABASE_URL``).
        timeout: seconds a statement may wait (SQLite: for another writer's lock; PostgreSQL: in all,
            the server cancels it then); default ``MNIST_HITL_DATABASE_STATEMENT_TIMEOUT``.

    Raises:
        StoreError: the store cannot be created, written or read; nothing was touched.
    """

    def __init__(self, location: str | Path, timeout: float | None = None) -> None:
        self.url = str(location) if is_url(location) else None
        self.path = None if self.url else Path(location)
        self.dialect = "postgresql" if self.url else "sqlite"
        self._lock = threading.RLock()
        self._held: Connection | None = None
        timeout = timeout or get_settings().database_statement_timeout
        if self.url:
            self.engine = postgres_engine(self.url, statement_timeout=timeout)
        else:
            self._check_folder()
            self.engine = sqlite_engine(self.path, timeout)
        try:
            self._migrate()
        except BaseException as error:
            self.close()
            if isinstance(error, sqlalchemy.exc.DBAPIError):
                raise self._error(error.orig) from error
            raise

    def _check_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the store's folder {self.path.parent} ({error.strerror}):"
                " set MNIST_HITL_HOME to a folder this user can write"
            ) from None
        if blocked := unwritable(self.path):
            raise StoreError(read_only(blocked))

    def _error(self, error: BaseException) -> StoreError:
        """The database's error as a StoreError that says what to do (a full disk, an unreachable server...)."""
        if self.url:
            return postgres_error(shown(self.url), error)
        if isinstance(error, sqlite3.Error):
            return sqlite_error(self.path, error)
        return StoreError(f"the store {self.path} failed: {error}")

    def close(self) -> None:
        if self.path is not None:  # a PostgreSQL engine is the process's, shared by its stores
            with self._lock:
                if self._held is not None:
                    self._held.close()
                self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """PostgreSQL: a connection from the process's pool. SQLite: the store's one connection, one
        caller at a time, as a sqlite3 connection is; each use ends SQLAlchemy's transaction, and only
        :meth:`_transaction` opens one in SQLite."""
        if self.path is None:
            with self.engine.connect() as conn:
                yield conn
            return
        with self._lock:
            if self._held is None:
                self._held = self.engine.connect()
            try:
                yield self._held
            finally:
                self._held.rollback()  # SQLite: no BEGIN was sent, every statement has committed itself

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._connection() as conn:
            yield conn

    @contextmanager
    def _statement(self) -> Iterator[Connection]:
        """A connection for one write statement, atomic by itself: on SQLite no ``BEGIN``, so the write
        lock is held for that statement alone (writers wait on each other least)."""
        with self._connection() as conn:
            if self.dialect == "sqlite":
                yield conn
            else:
                with conn.begin():
                    yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction: all or nothing (SQLite: ``BEGIN IMMEDIATE``, the write lock first)."""
        with self._connection() as conn:
            conn.execution_options(**{WRITE: True})
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.execution_options(**{WRITE: False})

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return  # the usual case: no write lock needed
        if self.dialect == "sqlite":
            self._apply_migrations()
            return
        # One migrating process at a time. The lock is taken in a transaction of its own, so the one that
        # migrates starts after the previous holder's commit, and sees its tables.
        with self.engine.connect() as conn:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_lock(3, 0)"))
            try:
                self._apply_migrations(conn)
            finally:
                with conn.begin():
                    conn.execute(text("SELECT pg_advisory_unlock(3, 0)"))

    def _apply_migrations(self, connection: Connection | None = None) -> None:
        with contextlib.ExitStack() as stack:
            if connection is None:
                conn = stack.enter_context(self._transaction())
            else:
                conn = connection
                stack.enter_context(conn.begin())
            version = read_schema_version(conn, self.dialect)
            if version > SCHEMA_VERSION:
                where = self.path or shown(self.url)
                raise StoreError(
                    f"{where} has schema {version}, newer than this code ({SCHEMA_VERSION}): update mnist-hitl"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in migration(number, self.dialect):
                    conn.exec_driver_sql(statement)
            if self.dialect == "sqlite":
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
            else:
                conn.execute(text("UPDATE store_schema SET version = :v"), {"v": SCHEMA_VERSION})

    @property
    @database_errors
    def schema_version(self) -> int:
        with self._read() as conn:
            return read_schema_version(conn, self.dialect)

    def _all(self, query: str, **params) -> list[dict]:
        with self._read() as conn:
            return [dict(row) for row in conn.execute(text(query), params).mappings()]

    def _one(self, query: str, **params) -> dict | None:
        with self._read() as conn:
            row = conn.execute(text(query), params).mappings().first()
            return None if row is None else dict(row)
