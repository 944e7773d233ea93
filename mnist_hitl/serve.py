"""How the drawing app is served: the Voila command line.

Voila runs standalone (it keeps its preheated kernels), launched through
:func:`main`, which adds jupyter_server's HTTP metrics: every request is timed
into ``http_request_duration_seconds{method, handler, status_code}`` and the
server answers ``/metrics`` without authentication (like jupyter_server with
``--ServerApp.authenticate_prometheus=False``); the app itself has no login, and
binds the loopback address unless configured otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.config import Settings


def voila_command(settings: Settings, port: int | None = None, pool_size: int = 2) -> list[str]:
    """The command that serves ``notebooks/draw.ipynb`` with Voila on the configured address.

    Kernels are preheated (a pool per notebook), so a page load finds a kernel that
    has already imported the app and loaded the model.
    """
    notebook = Path(settings.notebooks_dir) / "draw.ipynb"
    return [
        sys.executable, "-m", "mnist_hitl.serve", str(notebook),
        f"--port={port or settings.app_port}",
        "--Voila.port_retries=0",  # fail on a busy port rather than serve on another one
        f"--Voila.ip={settings.app_host}",
        "--no-browser",
        "--preheat_kernel=True",
        f"--pool_size={pool_size}",
        "--show_tracebacks=True",
        f"--Voila.root_dir={notebook.parent}",
    ]


def main(argv: list[str] | None = None) -> None:
    """Run Voila (same arguments as ``voila``) with HTTP metrics at ``/metrics``."""
    # The server keeps its own in-process metrics; the kernels it starts set up the
    # shared multiprocess folder themselves (mnist_hitl.metrics).
    config.export("PROMETHEUS_MULTIPROC_DIR", None)
    from jupyter_server.base.handlers import PrometheusMetricsHandler
    from jupyter_server.log import log_request
    from jupyter_server.utils import url_path_join
    from traitlets.config import Config
    from voila.app import Voila

    class VoilaWithMetrics(Voila):
        def init_handlers(self) -> list:
            metrics = (url_path_join(self.server_url, "/metrics"), PrometheusMetricsHandler)
            return [metrics, *super().init_handlers()]

    voila_config = Config()
    voila_config.Voila.tornado_settings = {"log_function": log_request, "authenticate_prometheus": False}
    VoilaWithMetrics.launch_instance(argv, config=voila_config)


if __name__ == "__main__":
    main()
