"""What the scale-out tests share: the servers machines share, a cycle machine's home, a champion published.

The shared servers run as they do in docker-compose's ``scale`` profile: an MLflow tracking server on
PostgreSQL that serves the artifacts (nodes upload and download through it), and Prefect's server on
PostgreSQL. Each is started in a session of its own and stopped, with its children, by :func:`stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.clock import wait_for
from mnist_hitl.config import Settings, get_settings
from tests.support.helpers import free_port


@dataclass
class Server:
    """A shared server started by a test: its process (a session leader), its address, its log."""

    process: subprocess.Popen
    url: str
    log: Path

    def wait(self, path: str = "/health", timeout: float = 180) -> None:
        """Wait until ``url + path`` answers; fail with the end of the log if it does not in time."""
        assert wait_for(self.url + path, timeout=timeout), self.log.read_text()[-3000:]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment without its Prefect and MLflow variables, on the test's home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, "MNIST_HITL_HOME": str(settings.home), "PREFECT_HOME": str(settings.prefect_home), **extra}


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (to its process group, when it leads one), SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    leads_group = os.getpgid(process.pid) == process.pid
    send = os.killpg if leads_group else os.kill
    send(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        send(process.pid, signal.SIGKILL)
        process.wait()
    if leads_group:  # what it started and left behind (a server's workers)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_until(check, timeout: float, what: str, log: Path):
    """Poll ``check`` every second until it returns something true; fail with the end of ``log`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return found


def start_mlflow_server(folder: Path, backend_url: str) -> Server:
    """``mlflow server`` on a PostgreSQL backend, serving the artifacts it keeps under ``folder`` (not waited for)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # telemetry off, no job runner
    server_env = {**os.environ, **config.tool_environment(get_settings().replace(home=folder))}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_url]
    command += ["--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = folder / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=server_env, stdout=output, stderr=output, start_new_session=True)
    return Server(process, f"http://127.0.0.1:{port}", log)


def start_prefect_server(folder: Path, database_url: str) -> Server:
    """Prefect's server (behind mnist-hitl's Host check) on a PostgreSQL database (not waited for).

    Its ``url`` is the API's (``.../api``), what ``PREFECT_API_URL`` names.
    """
    settings = get_settings().replace(home=folder)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_env = environment(
        settings,
        PREFECT_API_DATABASE_CONNECTION_URL=database_url.replace("postgresql+psycopg://", "postgresql+asyncpg://"),
    )
    command = [sys.executable, "-m", "mnist_hitl.cli", "prefect-server", "--host", "127.0.0.1", "--port", str(port)]
    log = folder / "server.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, env=server_env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(process, f"http://127.0.0.1:{port}/api", log)


def cycle_home(folder: Path, quick_models: Path, tracking_uri: str | None = None, **changes) -> Settings:
    """The cycle's machine: the quick model deployed, MLflow on ``tracking_uri`` (default: its own SQLite).

    ``changes`` are further settings, by field name (e.g. ``database_url``).
    """
    shutil.copytree(quick_models, folder / "models")
    uri = tracking_uri or f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}"
    return get_settings().replace(home=folder, mlflow_tracking_uri=uri, **changes)


def publish(cycle: Settings, network) -> tuple[str, str]:
    """What a cycle does with a challenger it promotes: a run, the version saved and registered, then deployed.

    Returns:
        The model version and its registered (MLflow) version.
    """
    from mnist_hitl.learning import tracking
    from mnist_hitl.learning.retrain import deployment
    from mnist_hitl.store import open_store

    run_id = tracking.start_run(cycle, "retrain", "retrain", "test-cycle")
    record = {"reason": "published by a test"}
    with open_store(cycle) as store:
        outcome = deployment.publish(cycle, store, network, 0.97, record, reasons=["a test promotes it"], run_id=run_id)
    tracking.end_run(cycle, run_id)
    return outcome.version, outcome.mlflow_version
