"""How the drawing app is served: the Voila command line.

Voila runs standalone (it keeps its preheated kernels, if asked for), launched through
:func:`main`, which adds jupyter_server's HTTP metrics: every request is timed
into ``http_request_duration_seconds{method, handler, status_code}`` and the
server answers ``/metrics`` without authentication (like jupyter_server with
``--ServerApp.authenticate_prometheus=False``); the app itself has no login, and
binds the loopback address unless configured otherwise.

Every page load gets a kernel of its own (about 100 MB), and Voila would keep each one
for ever; :func:`main` also makes the server safe to leave running:

- it answers only to ``localhost``, ``127.0.0.1``, the bind address and the names in
  ``MNIST_HITL_ALLOWED_HOSTS``: its handlers are registered for those only, so a page of another site
  that reaches it through DNS rebinding (its own name, resolving to 127.0.0.1) gets a
  400, static files and kernel sockets included;
- a kernel no browser is connected to (a page load by a script, a tab that crashed)
  is shut down after ``MNIST_HITL_APP_KERNEL_IDLE_SECONDS`` idle (jupyter_server's
  culler; preheated kernels waiting in the pool are never culled);
- at most ``MNIST_HITL_APP_MAX_KERNELS`` pages hold a kernel at once (the preheated
  pool comes on top); one more page load gets a short "busy" page with status 503;
- a failing cell shows no traceback in the browser (it goes to the server's log).

:func:`running_app` serves it for a test or a benchmark and returns once a page
load would find a preheated kernel waiting (or, without a pool, once the server answers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.config import Settings


def voila_command(settings: Settings, port: int | None = None, pool_size: int | None = None) -> list[str]:
    """The command that serves ``notebooks/draw.ipynb`` with Voila on the configured address.

    With ``pool_size`` kernels preheated (default ``MNIST_HITL_APP_WARM_KERNELS``, 0), a page
    load finds a kernel that has already imported the app and loaded the model. None by default:
    each kernel held in reserve costs ~85 MB while the stack is idle, and without one a page
    starts its own kernel when it is opened (a second or two: the app's kernel does not import
    TensorFlow).
    """
    notebook = Path(settings.notebooks_dir) / "draw.ipynb"
    idle = settings.app_kernel_idle_seconds
    pool_size = settings.app_warm_kernels if pool_size is None else pool_size
    return [
        sys.executable,
        "-m",
        "mnist_hitl.app.command",
        str(notebook),
        f"--port={port or settings.app_port}",
        "--Voila.port_retries=0",  # fail on a busy port rather than serve on another one
        f"--Voila.ip={settings.app_host}",
        "--no-browser",
        f"--preheat_kernel={pool_size > 0}",
        f"--pool_size={pool_size}",
        "--show_tracebacks=False",
        f"--Voila.root_dir={notebook.parent}",
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        f"--MappingKernelManager.cull_interval={max(1, min(60, idle // 5))}",
        "--MappingKernelManager.cull_connected=False",
        f"--VoilaWithMetrics.max_kernels={settings.app_max_kernels}",
        f"--VoilaWithMetrics.allowed_hosts={','.join(settings.allowed_hosts)}",
    ]


def free_port() -> int:
    """A TCP port nothing listens on now, on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class RunningApp:
    """A Voila server started by :func:`running_app`."""

    url: str
    settings: Settings  # its settings, ``app_port`` the port it serves on
    process: subprocess.Popen
    log: Path


@contextmanager
def running_app(
    settings: Settings, port: int | None = None, pool_size: int = 1, log: Path | None = None, timeout: float = 120.0
) -> Iterator[RunningApp]:
    """Serve the app with Voila until the block ends; enter it once the kernel pool is filled (if any).

    Voila runs in its own process group, with the environment a service of the local
    stack gets (:func:`mnist_hitl.config.child_environment`). Ready means a static file
    answers and Voila's log says the pool is filled: asking for the page itself would
    take a kernel out of the pool. On exit the server is stopped (it shuts its kernels
    down), then its whole group is killed, so no kernel outlives it.

    Args:
        settings: the home and the address to serve.
        port: where to serve (default: a free port).
        pool_size: preheated kernels.
        log: where Voila's output goes (default: ``voila.log`` in the home folder).
        timeout: seconds to wait for the filled pool.

    Raises:
        RuntimeError: Voila exited or did not get ready in time; the message holds its log.
    """
    settings = settings.replace(app_port=port or free_port())
    log = Path(log or settings.home / "voila.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            voila_command(settings, pool_size=pool_size),
            env=config.child_environment(settings),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        host = "127.0.0.1" if settings.app_host in ("", "0.0.0.0") else settings.app_host
        app = RunningApp(f"http://{host}:{settings.app_port}/", settings, process, log)
        _wait_until_ready(app, timeout, pool_size > 0)
        yield app
    finally:
        _stop(process)


def _wait_until_ready(app: RunningApp, timeout: float, pool: bool) -> None:
    deadline = time.monotonic() + timeout
    answering = False
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"voila exited with {app.process.returncode}:\n{app.log.read_text()}")
        if not answering:
            try:
                with urllib.request.urlopen(f"{app.url}voila/static/favicon.ico", timeout=2):
                    answering = True
            except (urllib.error.URLError, OSError):
                pass
        if answering and (not pool or "is filled with" in app.log.read_text(errors="replace")):
            return
        time.sleep(0.2)
    raise RuntimeError(f"voila did not get ready in {timeout:.0f} s:\n{app.log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    """Stop Voila with SIGTERM, then kill its process group: what a hung server leaves is in it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    """Run Voila (same arguments as ``voila``) with HTTP metrics at ``/metrics``, a Host check and a kernel cap."""
    # The server keeps its own in-process metrics; the kernels it starts set up the
    # shared multiprocess folder themselves (mnist_hitl.metrics).
    config.export("PROMETHEUS_MULTIPROC_DIR", None)
    from jupyter_server.log import log_request
    from traitlets.config import Config

    from mnist_hitl.app.server import VoilaWithMetrics

    voila_config = Config()
    voila_config.Voila.tornado_settings = {"log_function": log_request, "authenticate_prometheus": False}
    VoilaWithMetrics.launch_instance(argv, config=voila_config)


if __name__ == "__main__":
    main()
