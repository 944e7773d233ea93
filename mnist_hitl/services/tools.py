"""The stack's third-party server, Prometheus: its config and command line, built from the settings.

``mnist-hitl prometheus`` replaces itself with this command, so every line of the ``Procfile`` and every
service of ``docker-compose.yml`` is a ``mnist-hitl`` command, and the paths and addresses the tool gets
come from one place, the settings, rather than from the Procfile's variables. (MLflow is served in the
``mnist-hitl mlflow`` process itself: :mod:`.mlflow_server`.)
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from mnist_hitl.config import Settings
from mnist_hitl.resources import resource


def prometheus_folder(settings: Settings) -> Path:
    """Where the local stack's Prometheus keeps its config and its data."""
    return settings.home / "prometheus"


def prometheus_config(settings: Settings, scrape_interval: str | None = None) -> str:
    """``dashboards/prometheus/prometheus.yml`` with the local addresses as targets.

    The file in the repository names the docker-compose services and finds the nodes'
    exporters in its targets files; here the one node is this machine (its exporter
    labelled ``node`` with the host name, as each node is there). Jobs keep their names,
    so the dashboards' queries work against both.
    """
    import yaml

    config = yaml.safe_load(resource("dashboards/prometheus/prometheus.yml").read_text())
    host = settings.app_host
    targets = {
        "mnist-hitl": f"{host}:{settings.metrics_port}",
        "app": f"{host}:{settings.app_port}",
        "prometheus": f"{host}:{settings.prometheus_port}",
    }
    if scrape_interval:
        config.setdefault("global", {})["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job.pop("file_sd_configs", None)
            labels = {"node": socket.gethostname()} if job["job_name"] == "mnist-hitl" else {}
            job["static_configs"] = [{"targets": [targets[job["job_name"]]], **({"labels": labels} if labels else {})}]
    return yaml.safe_dump(config, sort_keys=False)


def write_prometheus_config(settings: Settings) -> Path:
    """Write :func:`prometheus_config` where :func:`prometheus_command` reads it; returns its path."""
    folder = prometheus_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(prometheus_config(settings))
    return folder / "prometheus.yml"


def prometheus_command(settings: Settings) -> list[str]:
    """Prometheus on the local stack: the config :func:`write_prometheus_config` writes, the data beside it.

    Raises:
        FileNotFoundError: the ``prometheus`` binary is not installed.
    """
    program = shutil.which("prometheus")
    if program is None:
        raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
    folder = prometheus_folder(settings)
    return [
        program,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={settings.app_host}:{settings.prometheus_port}",
    ]
