"""Metrics on a full disk: the process records on, in memory, and says so once; no file is left half-made.

The disk is made full by a ``posix_fallocate`` that answers ENOSPC, as a full disk does; the real
thing (a full tmpfs, where an unguarded write is SIGBUS) is in tests/integration/api/test_faults.py.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from mnist_hitl import metrics


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    directory = tmp_path / "metrics"
    metrics.use_folder(directory)
    yield directory
    metrics.use_folder(None)


def full_disk(*_: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_every_byte_a_metric_maps_has_a_block_of_its_own(folder: Path) -> None:
    metrics.record_prediction(7, "v1", 0.002)
    metrics.record_label(7, "correct")
    files = sorted(folder.glob("*.db"))
    assert files
    for file in files:
        status = file.stat()
        assert status.st_blocks * 512 >= status.st_size, f"{file.name} is sparse: a full disk would kill its writer"


def test_a_full_disk_keeps_metrics_in_memory_and_says_so_once(
    folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    with caplog.at_level(logging.WARNING, logger="mnist_hitl.metrics"):
        for _ in range(3):
            metrics.record_prediction(3, "v1", 0.001)
            metrics.record_refusal("StoreError")
            metrics.record_http_request("/predict", "POST", 507, 0.01)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "no space left" in warnings[0].lower() and "not exported" in warnings[0], warnings
    assert not [file.name for file in folder.glob("*.db") if file.stat().st_size == 0], "an empty metrics file is left"
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(metrics._state["instruments"].refusals)
    assert 'mnist_hitl_refusals_total{reason="StoreError"} 3.0' in generate_latest(registry).decode()


def test_a_disk_that_fills_while_a_file_grows_leaves_the_file_whole(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics.record_refusal("first")
    counter = next(folder.glob("counter_*.db"))
    size = counter.stat().st_size
    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    for number in range(400):  # enough new label values to outgrow the file's first size
        metrics.record_refusal(f"reason_{number:04d}_" + "x" * 100)
    assert counter.stat().st_size == size
    from prometheus_client.mmap_dict import MmapedDict

    keys = [key for key, *_ in MmapedDict.read_all_values_from_file(str(counter))]
    assert any('"first"' in key for key in keys)
