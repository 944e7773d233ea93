"""Data: the bundled digits and the local-file loaders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from mnist_hitl.config import get_settings
from mnist_hitl.learning.data import DataError, load_bundled, load_local, load_mnist, read_idx
from tests.support.helpers import write_idx


def test_bundled_split_is_stratified_disjoint_and_repeatable():
    first, second = load_bundled(), load_bundled()
    assert first.x_train.shape == (4000, 28, 28) and first.x_test.shape == (1000, 28, 28)
    assert first.x_train.dtype == np.uint8 and int(first.x_train.max()) == 255
    assert np.array_equal(np.bincount(first.y_test), np.full(10, 100))
    assert np.array_equal(np.bincount(first.y_train), np.full(10, 400))
    assert np.array_equal(first.x_test, second.x_test)
    train_rows = {row.tobytes() for row in first.x_train}
    assert not any(row.tobytes() in train_rows for row in first.x_test)


def test_the_parsed_digits_kept_in_the_home_give_the_same_split_and_a_damaged_cache_is_parsed_again(tmp_path):
    from mnist_hitl.learning import data as data_module

    parsed = load_bundled()
    cache = tmp_path / "cache"
    first = load_bundled(cache_dir=cache)
    files = sorted(cache.glob("bundled-mnist-*.npy"))
    assert len(files) == 2  # the digits and their labels, written by the first process to parse them
    data_module._bundled_digits.cache_clear()  # as a new process: read from the cache, not parsed
    from_cache = load_bundled(cache_dir=cache)
    for loaded in (first, from_cache):
        assert np.array_equal(loaded.x_train, parsed.x_train) and np.array_equal(loaded.y_test, parsed.y_test)

    files[0].write_bytes(files[0].read_bytes()[:1000])  # a cut file: parsed again and rewritten
    data_module._bundled_digits.cache_clear()
    again = load_bundled(cache_dir=cache)
    assert np.array_equal(again.x_test, parsed.x_test) and files[0].stat().st_size > 1000
    settings = get_settings(home=tmp_path / "home")
    assert np.array_equal(load_mnist(settings).x_test, parsed.x_test)
    assert len(list((settings.home / "cache").glob("*.npy"))) == 2  # the cycle's notebooks share the home's


def test_bundled_labels_are_digits_and_images_not_blank():
    data = load_bundled()
    assert set(np.unique(data.y_train)) == set(range(10))
    assert (data.x_train.reshape(len(data.x_train), -1).max(axis=1) > 100).all()


def _write_mnist_folder(folder, gz: bool):
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_local_idx_folder_round_trips(tmp_path, gz):
    arrays = _write_mnist_folder(tmp_path, gz)
    data = load_local(tmp_path)
    assert np.array_equal(data.x_train, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert data.y_train.dtype == np.int64


def test_local_source_is_chosen_by_settings(tmp_path, monkeypatch):
    arrays = _write_mnist_folder(tmp_path, gz=True)
    monkeypatch.setenv("MNIST_HITL_MNIST_SOURCE", "local")
    monkeypatch.setenv("MNIST_HITL_MNIST_PATH", str(tmp_path))
    data = load_mnist(get_settings())
    assert len(data.x_train) == 12 and np.array_equal(data.x_test, arrays["t10k-images-idx3-ubyte"])


def test_keras_npz_file_is_read(tmp_path):
    rng = np.random.default_rng(2)
    x_train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=np.arange(7) % 10, x_test=x_test, y_test=np.arange(3))
    data = load_local(tmp_path / "mnist.npz")
    assert np.array_equal(data.x_train, x_train) and list(data.y_test) == [0, 1, 2]


def test_truncated_idx_file_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((4, 28, 28), np.uint8))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="header says"):
        read_idx(path)


def test_missing_local_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_HITL_MNIST_SOURCE", "local")
    monkeypatch.delenv("MNIST_HITL_MNIST_PATH", raising=False)
    with pytest.raises(DataError, match="MNIST_HITL_MNIST_PATH"):
        load_mnist(get_settings())
    with pytest.raises(DataError, match="no train-images"):
        load_local(tmp_path)
