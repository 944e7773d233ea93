"""Writing files so that a reader never sees half of one: write aside, flush to disk, rename into place."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np


def _partial(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def atomic_write(target: Path | str, data: bytes) -> Path:
    """Replace ``target`` with ``data`` in one step (a killed writer leaves the old file)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(target)
    with open(partial, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return target


def atomic_copy(source: Path | str, target: Path | str) -> Path:
    """Replace ``target`` with a copy of ``source`` in one step."""
    target = Path(target)
    partial = _partial(target)
    shutil.copyfile(source, partial)
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return target


def json_default(value):
    """JSON for numpy scalars and arrays and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Path | str, data: object) -> Path:
    """Write JSON atomically, numpy values and paths included."""
    return atomic_write(path, json.dumps(data, indent=2, default=json_default).encode())
