"""What the API's tests share: the in-process client's host name allowed, and ``mnist-hitl api`` running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_hitl.config import Settings
from tests.support.api import running_api


@pytest.fixture(autouse=True)
def testserver_is_an_allowed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette's in-process client sends ``Host: testserver``: allowed here as a user allows a name of their own."""
    monkeypatch.setenv("MNIST_HITL_ALLOWED_HOSTS", "testserver")


@pytest.fixture
def api_url(home_with_model: Settings, tmp_path: Path) -> Iterator[str]:
    """``mnist-hitl api`` on a free port of 127.0.0.1, ready; its address."""
    with running_api(home_with_model, tmp_path / "api.log") as url:
        yield url
