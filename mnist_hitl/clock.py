"""Time as the project writes it: UTC stamps, sortable ids, and stage timings."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime


def utc_now(timespec: str = "seconds") -> str:
    """Now in UTC, ISO 8601: to the second for records and watermarks; ``"microseconds"`` for rows,
    whose stamps must sort as text in the order they were written."""
    return datetime.now(UTC).isoformat(timespec=timespec)


def timestamp_id(moment: datetime | None = None) -> str:
    """A sortable id from a UTC time to the millisecond: ``20261127-101500-123`` (model versions, cycles)."""
    now = moment or datetime.now(UTC)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


def wait_for(url: str, timeout: float = 300.0) -> bool:
    """Wait until ``url`` answers 200; True if it did within ``timeout`` seconds."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


class Stopwatch:
    """Seconds spent per named stage: ``with clock("search"): ...``; repeated names add up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)

    def call(self, name: str, function, *args, **kwargs):
        """Call ``function`` timed as ``name`` and return its result."""
        with self(name):
            return function(*args, **kwargs)
