"""The local stack's logs: one file per service, ``$MNIST_HITL_HOME/logs/<service>.log``, and their reader.

``mnist-hitl run`` writes every line a service prints to its file (:mod:`.console` decides what
reaches the terminal), appending across restarts, each start marked by a line of its own. A file
over :data:`ROTATE_BYTES` at a start is kept as ``<service>.log.1`` (the one before it goes), so
the folder stays bounded however long the stack lives.

    mnist-hitl logs                 every service's last lines, each line prefixed with its service
    mnist-hitl logs lab             the lab's last lines
    mnist-hitl logs lab -f          ... and every new one, until Ctrl-C (as ``tail -f``)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TextIO

from mnist_hitl.config import Settings

ROTATE_BYTES = 16 * 2**20


def log_folder(settings: Settings) -> Path:
    """Where the stack's services write their logs."""
    return settings.home / "logs"


def log_path(folder: Path, service: str) -> Path:
    return folder / f"{service}.log"


def open_logs(folder: Path, services: Iterable[str]) -> dict[str, BinaryIO]:
    """Each service's log, opened to append (unbuffered: a line is on disk once written), the large ones rotated."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for service in services:
        path = log_path(folder, service)
        if path.is_file() and path.stat().st_size > ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
        files[service] = open(path, "ab", buffering=0)  # noqa: SIM115 (open for the stack's whole life)
    return files


def last_lines(path: Path, count: int, block: int = 65536) -> list[str]:
    """The last ``count`` lines of a file (read from its end, however large it is), without line ends."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - block))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if size > block:
        lines = lines[1:]  # the first may be the tail of a line
    return lines[-count:] if count > 0 else []


def logged_services(folder: Path) -> list[str]:
    """The services with a log in the folder, by name."""
    return sorted(path.stem for path in folder.glob("*.log"))


def show_logs(folder: Path, services: list[str], out: TextIO, lines: int = 20) -> None:
    """The last lines of each service's log; prefixed with the service's name when there are several."""
    width = max(len(name) for name in services)
    for service in services:
        path = log_path(folder, service)
        prefix = f"{service:<{width}} | " if len(services) > 1 else ""
        if len(services) > 1:
            print(f"{prefix}==> {path} ({_size(path)})", file=out)
        for line in last_lines(path, lines):
            print(prefix + line, file=out)
    out.flush()


def follow_logs(
    folder: Path, services: list[str], out: TextIO, stop: Callable[[], bool], interval: float = 0.25
) -> None:
    """Print what the services' logs gain, line by line, until ``stop()`` (a rotated log is followed anew)."""
    width = max(len(name) for name in services)
    positions = {service: _end(log_path(folder, service)) for service in services}
    pending = dict.fromkeys(services, b"")
    while not stop():
        quiet = True
        for service in services:
            data, positions[service] = _read_from(log_path(folder, service), positions[service])
            if not data:
                continue
            quiet = False
            *complete, pending[service] = (pending[service] + data).split(b"\n")
            prefix = f"{service:<{width}} | " if len(services) > 1 else ""
            for line in complete:
                print(prefix + line.decode(errors="replace").rstrip("\r"), file=out)
        out.flush()
        if quiet:
            time.sleep(interval)


def _end(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, position: int) -> tuple[bytes, int]:
    """What the file holds after ``position``, and the new position (from the start if the file shrank)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < position:
                position = 0
            handle.seek(position)
            data = handle.read(1 << 20)
    except OSError:
        return b"", position
    return data, position + len(data)


def _size(path: Path) -> str:
    size = _end(path)
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.1f} kB" if size >= 1024 else f"{size} B"
