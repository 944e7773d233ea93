"""One learning cycle at a time: an ``flock`` on ``$MNIST_HITL_HOME/cycle.lock``.

The kernel releases the lock when the holder exits, however it exits, so a
killed cycle never leaves a stale lock behind. The file names the holder, so a
second cycle can say which one is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
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
