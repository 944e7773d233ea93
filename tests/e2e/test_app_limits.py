"""The drawing app's server lets no client hold a connection by sending nothing, or its headers a byte at a time."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from mnist_hitl.app.command import running_app
from mnist_hitl.config import Settings
from tests.support.api import closed_by_server

pytestmark = pytest.mark.slow


def test_the_app_closes_connections_whose_request_does_not_come(
    home_with_model: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_HITL_SERVER_READ_TIMEOUT", "1")
    with running_app(home_with_model, pool_size=1, log=tmp_path / "voila.log") as app:
        address = ("127.0.0.1", app.settings.app_port)
        silent = [socket.create_connection(address, timeout=30) for _ in range(20)]
        dawdling = [socket.create_connection(address, timeout=30) for _ in range(5)]
        try:
            for connection in dawdling:
                connection.sendall(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n".encode())
            assert all(closed_by_server(connection) for connection in silent + dawdling)
            with urllib.request.urlopen(f"{app.url}metrics", timeout=60) as answer:
                assert answer.status == 200
        finally:
            for connection in silent + dawdling:
                connection.close()
