"""The metrics exporter (``mnist-hitl metrics``): every process' metrics, summed, and the deployed version.

Each process records into prometheus_client's multiprocess files (:mod:`mnist_hitl.metrics`);
this registry reads them all at each scrape, with the version the pointer names now. The HTTP API
serves the same registry at its own ``/metrics``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError, deployed_model


class DeployedModelCollector:
    """Reads the deployed version at each scrape: ``mnist_hitl_deployed_model_info``.

    When the deployment changes it also calls :func:`mnist_hitl.metrics.set_deployed_model`, so the
    version's timestamp is right even if whoever deployed it did not publish it.
    """

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.published: str | None = None

    def collect(self):
        from prometheus_client.core import InfoMetricFamily

        family = InfoMetricFamily(
            f"{metrics.PREFIX}_deployed_model", "The deployed model version.", labels=("model_version",)
        )
        try:
            version = deployed_model(self.models_dir).version
        except ModelFileError:
            version = None
        if version is not None:
            if version != self.published:
                metrics.set_deployed_model(version)
                self.published = version
            family.add_metric([version], {})
        yield family


def exporter_registry(settings: Settings | None = None):
    """The registry the exporter serves: the deployed version, then every process' files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    settings = settings or get_settings()
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(DeployedModelCollector(settings.models_dir))  # first: it may write a value
    MultiProcessCollector(registry, path=str(settings.metrics_dir))
    return registry


def serve_exporter(port: int | None = None, host: str | None = None, settings: Settings | None = None) -> None:
    """Serve the sums of every process' metrics at ``http://<host>:<port>/metrics`` until stopped.

    Args:
        port: defaults to ``MNIST_HITL_METRICS_PORT`` (9108).
        host: defaults to ``MNIST_HITL_APP_HOST`` (127.0.0.1), the address every service binds.
        settings: defaults to the environment's settings.
    """
    from prometheus_client import start_http_server

    settings = settings or get_settings()
    port = port or settings.metrics_port
    host = host or settings.app_host
    server, thread = start_http_server(port, addr=host, registry=exporter_registry(settings))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"metrics: http://{host}:{port}/metrics (files in {settings.metrics_dir})", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
