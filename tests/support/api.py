"""``mnist-hitl api`` running on a free port, for the tests that drive it as its clients do, and what they send it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from tests.support.helpers import free_port, start_cli

PNG = {"content-type": "image/png"}


@contextmanager
def running_api(settings: Settings, log_path: Path, **extra_env: str) -> Iterator[str]:
    """``mnist-hitl api`` on a free port of 127.0.0.1, ready, with ``extra_env``; its address."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = start_cli(
            settings, "api", "--port", str(port), extra_env=extra_env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


def digit_png(index: int = 0) -> bytes:
    """A bundled MNIST test digit as a PNG."""
    return encode_png(load_bundled().x_test[index])


def wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Wait until ``/health/ready`` answers 200, failing with the log if the process exits first or never gets there."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text() if log.exists() else process.returncode
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "the API never got ready"
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to the port that send nothing (yet)."""
    connections = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        connections.append(connection)
    return connections


def closed_by_server(connection: socket.socket) -> bool:
    """Whether the server has closed the connection (within the socket's timeout)."""
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
