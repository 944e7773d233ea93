"""The store tests' stores: each test runs on a new, empty SQLite file and on a PostgreSQL database of its own."""

from __future__ import annotations

import pytest

from mnist_hitl.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    """Where a new, empty store is: a SQLite file, or a PostgreSQL database of the test's own."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(location):
    with Store(location) as opened:
        yield opened
