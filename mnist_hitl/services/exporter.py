"""The metrics exporter (``mnist-hitl metrics``): every process' metrics, summed, the deployed version and the
team's agreement.

Each process records into prometheus_client's multiprocess files (:mod:`mnist_hitl.metrics`);
this registry reads them all at each scrape, with the version the pointer names now and the
team's agreement figures as of the last cycle (``$MNIST_HITL_HOME/team.json``, which the cycle writes:
:mod:`mnist_hitl.workbench.agreement`). The HTTP API
serves the same registry at its own ``/metrics``. Like every service, the exporter answers only
the allowed host names (:attr:`mnist_hitl.config.Settings.allowed_hosts`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from mnist_hitl import metrics
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError, deployed_model

if TYPE_CHECKING:
    from prometheus_client.exposition import ThreadingWSGIServer


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


class TeamCollector:
    """The team's agreement as of the last cycle, from the figures the cycle wrote
    (:func:`mnist_hitl.workbench.agreement.team_figures`).

    ``mnist_hitl_team_alpha`` (Krippendorff's), ``mnist_hitl_team_shared_drawings``,
    ``mnist_hitl_team_kappa{first, second}`` (Cohen's, per pair), ``mnist_hitl_reviewer_labels_total{reviewer}``
    and ``mnist_hitl_reviewer_agreement{reviewer}`` (agreement with the decided labels). Reading a small JSON
    file keeps the exporter lean and its scrapes cheap however long the label history: no store, no
    statistics library in this process. A figure that is undefined (nothing compared, one digit alone) is
    left out rather than served as NaN; no file yet (no cycle has run) or an unreadable one: no team metrics.
    """

    def __init__(self, settings: Settings) -> None:
        self.path = settings.team_figures_path

    def collect(self):
        import json

        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            figures = json.loads(self.path.read_text())
            people, pairs = figures["reviewers"], figures["kappa"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        team = f"{metrics.PREFIX}_team"
        alpha = GaugeMetricFamily(f"{team}_alpha", "Krippendorff's alpha (nominal) of the team's shared drawings.")
        if figures.get("alpha") is not None:
            alpha.add_metric([], figures["alpha"])
        yield alpha
        yield GaugeMetricFamily(
            f"{team}_shared_drawings",
            "Drawings two or more named reviewers labelled.",
            value=figures["shared_drawings"],
        )
        kappa = GaugeMetricFamily(
            f"{team}_kappa",
            "Cohen's kappa of a pair of reviewers on the drawings both labelled.",
            labels=("first", "second"),
        )
        for pair in pairs:
            kappa.add_metric(pair["reviewers"], pair["kappa"])
        yield kappa
        labels = CounterMetricFamily(
            f"{metrics.PREFIX}_reviewer_labels", "Labels given by each reviewer (undos apart).", labels=("reviewer",)
        )
        share = GaugeMetricFamily(
            f"{metrics.PREFIX}_reviewer_agreement",
            "The share of a reviewer's labels of shared drawings that are the decided label.",
            labels=("reviewer",),
        )
        for person in people:
            labels.add_metric([person["reviewer"]], person["labels"])
            if person.get("agreement") is not None:
                share.add_metric([person["reviewer"]], person["agreement"])
        yield labels
        yield share


def exporter_registry(settings: Settings | None = None):
    """The registry the exporter serves: the deployed version, the team's agreement, then every process' files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    settings = settings or get_settings()
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(DeployedModelCollector(settings.models_dir))  # first: it may write a value
    registry.register(TeamCollector(settings))
    MultiProcessCollector(registry, path=str(settings.metrics_dir))
    return registry


def answer_allowed_hosts(app, allowed_hosts: list[str]):
    """A WSGI app answering only requests whose ``Host`` names one of ``allowed_hosts`` (400 otherwise).

    The same rule as the app, the API and the Prefect server: a web page that reaches this port
    through a name of its own (DNS rebinding) cannot read the metrics.
    """
    allowed = {name.lower() for name in allowed_hosts}

    def guarded(environ, start_response):
        try:
            name = urlsplit("//" + environ.get("HTTP_HOST", "")).hostname
        except ValueError:
            name = None
        if name not in allowed:
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Invalid host header"]
        return app(environ, start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # one line per scrape would bury the stack's console
        pass


def exporter_server(settings: Settings, host: str, port: int) -> ThreadingWSGIServer:
    """The exporter's HTTP server on ``host:port`` (not yet serving): ``/metrics``, to the allowed hosts only."""
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    app = answer_allowed_hosts(make_wsgi_app(exporter_registry(settings)), settings.allowed_hosts)
    return make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)


def serve_exporter(port: int | None = None, host: str | None = None, settings: Settings | None = None) -> None:
    """Serve the sums of every process' metrics at ``http://<host>:<port>/metrics`` until stopped.

    Args:
        port: defaults to ``MNIST_HITL_METRICS_PORT`` (9108).
        host: defaults to ``MNIST_HITL_APP_HOST`` (127.0.0.1), the address every service binds.
        settings: defaults to the environment's settings.
    """
    settings = settings or get_settings()
    port = port or settings.metrics_port
    host = host or settings.app_host
    server = exporter_server(settings, host, port)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"metrics: http://{host}:{port}/metrics (files in {settings.metrics_dir})", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
