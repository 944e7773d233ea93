"""The store's SQLAlchemy engines: an embedded SQLite file, or a PostgreSQL server several machines share.

SQLite keeps the guarantees it had before SQLAlchemy: WAL, a busy timeout, foreign keys and
recursive triggers on every connection, and writes in ``BEGIN IMMEDIATE`` transactions (the
write lock is taken at the start, so a transaction never fails half-way on a lock), reads
without a transaction. PostgreSQL's engine is shared by every store of a process (its
connections are pooled); a forked child leaves its parent's connections alone.

Nothing waits for ever: a SQLite statement waits at most ``MNIST_HITL_DATABASE_STATEMENT_TIMEOUT``
for another writer's lock (the busy timeout); on PostgreSQL the server cancels a statement that
runs longer (``statement_timeout``), and a connection that is not made within
``MNIST_HITL_DATABASE_CONNECT_TIMEOUT`` fails (libpq's ``connect_timeout``). A server that stops
answering altogether (a stalled host) is not bounded here: callers that must answer in time
(the API's readiness) wait for the store on a thread of their own.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from mnist_hitl.config import get_settings
from mnist_hitl.store.rows import content_hash
from mnist_hitl.store.schema import HASH_FUNCTION

WRITE = "mnist_hitl_write"  # the execution option of a connection that writes


def is_url(location: str | Path) -> bool:
    return isinstance(location, str) and "://" in location


def sqlite_engine(path: Path, timeout: float) -> Engine:
    """An engine on one SQLite file, for one :class:`~mnist_hitl.store.database.Store`."""
    engine = sqlalchemy.create_engine(
        sqlalchemy.URL.create("sqlite", database=str(path)),
        connect_args={"timeout": timeout, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's own
        dbapi_connection.create_function(HASH_FUNCTION, 1, content_hash, deterministic=True)
        for pragma in (
            f"busy_timeout = {int(timeout * 1000)}",
            "journal_mode = WAL",
            "synchronous = NORMAL",
            "foreign_keys = ON",
            "recursive_triggers = ON",
        ):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        if connection.get_execution_options().get(WRITE):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_postgres_engines: dict[tuple[str, int, float], Engine] = {}


def postgres_engine(url: str, connect_timeout: int | None = None, statement_timeout: float | None = None) -> Engine:
    """The process's pooled engine on a PostgreSQL database.

    Args:
        connect_timeout, statement_timeout: in seconds; by default the settings'
            (``MNIST_HITL_DATABASE_CONNECT_TIMEOUT``, ``MNIST_HITL_DATABASE_STATEMENT_TIMEOUT``).
    """
    if connect_timeout is None or statement_timeout is None:
        settings = get_settings()
        connect_timeout = connect_timeout or settings.database_connect_timeout
        statement_timeout = statement_timeout or settings.database_statement_timeout
    key = (url, int(connect_timeout), float(statement_timeout))
    if key not in _postgres_engines:
        # Two connections kept per process (an app kernel uses one at a time), up to ten under load:
        # a hundred kernels stay within a server's few hundred connections.
        _postgres_engines[key] = sqlalchemy.create_engine(
            url,
            pool_size=2,
            max_overflow=8,
            pool_pre_ping=True,
            pool_timeout=statement_timeout,
            connect_args={
                "connect_timeout": int(connect_timeout),
                "options": f"-c statement_timeout={int(statement_timeout * 1000)}",
            },
        )
    return _postgres_engines[key]


def _forget_parent_connections() -> None:
    # SQLAlchemy's advice for a forked child: connect anew, leave the parent's connections alone.
    for engine in _postgres_engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_parent_connections)


def shown(url: str) -> str:
    """A database URL fit for a message: no password."""
    return make_url(url).render_as_string(hide_password=True)
