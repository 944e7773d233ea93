"""Ctrl-C stops each long-running command within seconds, with every process it started, and frees its ports.

Ctrl-C in a terminal sends SIGINT to the command's whole process group; each command here runs
in a session of its own, as in a terminal. ``mnist-hitl run`` is checked by tests/test_stack.py.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from mnist_hitl.config import Settings
from tests.support.helpers import ctrl_c, free_port, port_is_free, start_cli

pytestmark = pytest.mark.slow


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(check, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not ready in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def environment(settings: Settings, **ports: int) -> dict[str, str]:
    """This process's environment without Prefect's or MLflow's own, on the given home and ports."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PREFECT_") and k not in ("MLFLOW_TRACKING_URI", "PROMETHEUS_MULTIPROC_DIR")
    }
    return {**env, "MNIST_HITL_HOME": str(settings.home), **{k: str(v) for k, v in ports.items()}}


def start(env: dict, log: Path, *args: str) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        return start_cli(env, *args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def test_ctrl_c_stops_the_app_and_its_kernels(home_with_model: Settings, tmp_path: Path):
    port = free_port()
    log = tmp_path / "app.log"
    # One kernel preheated (the default is none): Ctrl-C must stop the page's kernel and the pool's.
    app = start(environment(home_with_model, MNIST_HITL_APP_WARM_KERNELS=1), log, "app", "--port", str(port))
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/voila/static/favicon.ico"), app, log)
        assert answers(f"http://127.0.0.1:{port}/")  # a page holds a kernel now, the pool starts another

        def kernels() -> list:
            return [c for c in psutil.Process(app.pid).children(recursive=True) if "kernel-" in " ".join(c.cmdline())]

        wait_until(lambda: len(kernels()) >= 2, app, log)  # the pool's new kernel starts a moment later
    finally:
        left = ctrl_c(app)
    assert left == [], f"{left}\n{log.read_text()[-3000:]}"
    assert port_is_free(port)


def test_ctrl_c_stops_the_metrics_exporter(home: Settings, tmp_path: Path):
    port = free_port()
    log = tmp_path / "metrics.log"
    exporter = start(environment(home), log, "metrics", "--port", str(port))
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/metrics"), exporter, log)
    finally:
        left = ctrl_c(exporter)
    assert left == [], left
    assert port_is_free(port)


def test_ctrl_c_stops_the_schedule_and_the_prefect_server_it_started(home: Settings, tmp_path: Path):
    port = free_port()
    log = tmp_path / "schedule.log"
    schedule = start(environment(home, MNIST_HITL_PREFECT_PORT=port), log, "schedule")
    deployment = f"http://127.0.0.1:{port}/api/deployments/name/hitl-cycle/scheduled"
    try:
        wait_until(lambda: answers(deployment), schedule, log)
        tree = [" ".join(p.cmdline()) for p in psutil.Process(schedule.pid).children(recursive=True)]
        servers = [command for command in tree if "prefect-server" in command or "uvicorn" in command]
        # the flow is served to the server it started, not to a temporary one of Prefect's own
        assert len(servers) == 1 and "mnist_hitl.cli prefect-server" in servers[0], tree
    finally:
        left = ctrl_c(schedule)
    assert left == [], f"{left}\n{log.read_text()[-3000:]}"
    assert port_is_free(port)
