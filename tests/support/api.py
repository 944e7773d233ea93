"""``mnist-hitl api`` running on a free port, for the tests that drive it as its clients do."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mnist_hitl.config import Settings
from tests.support.helpers import free_port, start_cli


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
