"""One learning cycle at a time: an ``flock`` on ``$MNIST_HITL_HOME/cycle.lock``, or across machines
a PostgreSQL advisory lock.

The kernel releases the lock when the holder exits, however it exits, so a
killed cycle never leaves a stale lock behind. The file names the holder, so a
second cycle can say which one is running.

With a shared database (``MNIST_HITL_DATABASE_URL`` on PostgreSQL) the cycles of every
machine take one session-level advisory lock instead. The server releases it when the
holder's connection ends, however the holder ends; the holder's connection carries its
name (``application_name``), so a second cycle can say which one is running, and where.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.clock import timestamp_id, utc_now
from mnist_hitl.config import Settings


class CycleBusy(RuntimeError):
    """Another learning cycle holds the lock."""


def lock_path(settings: Settings) -> Path:
    return settings.home / "cycle.lock"


@contextlib.contextmanager
def cycle_lock(settings: Settings) -> Iterator[str]:
    """Hold the cycle lock (``flock`` on ``$MNIST_HITL_HOME/cycle.lock``) and yield a new cycle id.

    The kernel releases the lock when the holder exits, however it exits.

    Raises:
        CycleBusy: another cycle holds it; the message says which and since when.
    """
    if settings.shared_database:
        with _advisory_lock(settings) as cycle_id:
            yield cycle_id
        return
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                info = json.loads(holder)
                who = f"cycle {info['cycle_id']} (pid {info['pid']}, started {info['started']})"
            except (ValueError, KeyError, TypeError):
                who = "another cycle"
            raise CycleBusy(
                f"another learning cycle is running: {who}; this one exits without doing anything"
            ) from None
        cycle_id = timestamp_id()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"cycle_id": cycle_id, "pid": os.getpid(), "started": utc_now()}).encode(), 0)
        try:
            yield cycle_id
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def cycle_running(settings: Settings) -> bool:
    """Whether a learning cycle holds the lock now.

    Probes with a shared lock, released at once: it never writes the file, and a cycle
    starting in that instant is the only one that could find the lock taken.
    """
    if settings.shared_database:
        return _advisory_holder(settings) is not None
    try:
        fd = os.open(lock_path(settings), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor releases the probe's lock
    return False


# across machines: a PostgreSQL advisory lock ------------------------------------------------

_CYCLE_KEY = (1, 0)  # the (class, object) key pair of the cycle's lock; the store uses classes 2, 3 and 4
_HOLDER = (
    "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.classid = :class AND l.objid = :object AND l.objsubid = 2 AND l.granted"
)


def _advisory_holder(settings: Settings) -> str | None:
    """Who holds the cycle's advisory lock, or None."""
    from sqlalchemy import text

    from mnist_hitl.store.engine import postgres_engine

    with postgres_engine(settings.database_url).connect() as connection:
        row = connection.execute(text(_HOLDER), {"class": _CYCLE_KEY[0], "object": _CYCLE_KEY[1]}).first()
    return None if row is None else f"{row[0] or 'a cycle'} (connected {row[1]:%Y-%m-%d %H:%M:%S%z})"


@contextlib.contextmanager
def _advisory_lock(settings: Settings) -> Iterator[str]:
    from sqlalchemy import text

    from mnist_hitl.store.engine import postgres_engine

    cycle_id = timestamp_id()
    name = f"mnist-hitl cycle {cycle_id} pid {os.getpid()} on {socket.gethostname()}"[:63]
    with postgres_engine(settings.database_url).connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")  # the lock outlives any transaction
        keys = {"class": _CYCLE_KEY[0], "object": _CYCLE_KEY[1]}
        if not connection.execute(text("SELECT pg_try_advisory_lock(:class, :object)"), keys).scalar_one():
            who = _advisory_holder(settings) or "another cycle"
            raise CycleBusy(f"another learning cycle is running: {who}; this one exits without doing anything")
        try:
            connection.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
            yield cycle_id
        finally:
            connection.execute(text("SELECT set_config('application_name', '', false)"))
            connection.execute(text("SELECT pg_advisory_unlock(:class, :object)"), keys)


def start_cycle(settings: Settings, command: list[str], log: Path) -> subprocess.Popen | None:
    """Start ``command`` (a learning cycle) as a detached process, unless a cycle holds the lock.

    The cycle takes the lock itself: a second one started meanwhile exits at once, harmlessly.

    Args:
        settings: its home and environment (:func:`mnist_hitl.config.child_environment`).
        command: e.g. ``mnist-hitl cycle --force-retrain``.
        log: where its output is appended.

    Returns:
        The process, or None if a cycle is running.
    """
    if cycle_running(settings):
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=config.child_environment(settings),
        )
