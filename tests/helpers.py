"""Helpers the tests share: free ports, IDX files, ..."""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

import numpy as np


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    if array.dtype not in codes:
        raise ValueError(f"write_idx supports uint8 and int8, not {array.dtype}")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
