"""The serving commands: the whole local stack, and each of its services on its own.

Every line of the ``Procfile`` and every service of ``docker-compose.yml`` that runs the mnist-hitl image
is one of these (or a learning command): the app, the HTTP API, JupyterLab, the metrics exporter, the
registry follower, the Prefect server, MLflow and Prometheus, and the start-up steps ``wait-for`` and
``prepare``. A server that is another program (Voila, JupyterLab, Prometheus) replaces this
process (``exec``), so Ctrl-C and ``docker stop`` reach it directly; the Prefect server and MLflow are
served in this process (uvicorn), without the parent process their own commands keep.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from mnist_hitl.cli.errors import fail

commands = typer.Typer()


@commands.command()
def run() -> None:
    """Start the whole local stack: app, Prefect server and schedule, MLflow UI, JupyterLab, metrics, Prometheus."""
    from mnist_hitl.services.stack import run_stack

    run_stack()


@commands.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="one service's log (default: every one's)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="print new lines as they come, until Ctrl-C")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="how many last lines of each log")] = 20,
) -> None:
    """Show the local stack's logs ($MNIST_HITL_HOME/logs/<service>.log): the last lines, or follow them."""
    import signal
    import sys
    import threading

    from mnist_hitl.config import get_settings
    from mnist_hitl.services.logs import follow_logs, log_folder, logged_services, show_logs
    from mnist_hitl.services.stack import procfile_services

    folder = log_folder(get_settings())
    logged, names = logged_services(folder), procfile_services()
    if service is not None and service not in {*names, *logged}:
        fail(f"no service {service!r}: the stack's services are {', '.join(names)}", code=2)
    chosen = [service] if service else logged
    if not chosen or chosen[0] not in logged:
        fail(f"no log{f' of {service}' if service else 's'} in {folder} yet: `mnist-hitl run` writes them")
    show_logs(folder, chosen, sys.stdout, lines)
    if follow:
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        follow_logs(folder, chosen, sys.stdout, stop.is_set)


@commands.command(name="app")
def serve_app(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_APP_PORT, 8866)")] = None,
) -> None:
    """Serve the drawing app with Voila."""
    from mnist_hitl.app.command import voila_command
    from mnist_hitl.config import get_settings

    settings = get_settings()
    command = voila_command(settings, port=port)
    typer.echo(f"drawing app: http://{settings.app_host}:{port or settings.app_port}/", err=True)
    os.execvp(command[0], command)


@commands.command()
def api(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_API_PORT, 8000)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API (FastAPI, uvicorn): predict, label, history, reload; docs at /docs."""
    from mnist_hitl.api import serve_api

    serve_api(port=port, workers=workers)


@commands.command()
def token(name: Annotated[str, typer.Argument(help="whose token: the reviewer their labels will carry")]) -> None:
    """Make a named API token: print the token (shown once, give it to NAME) and the line for the API's
    MNIST_HITL_API_TOKENS_FILE (or, with a colon for the space, an entry of MNIST_HITL_API_TOKENS)."""
    from mnist_hitl.api.tokens import new_token

    secret, line = new_token(name)
    typer.echo(json.dumps({"reviewer": line.rsplit(" ", 1)[0], "token": secret, "line": line}))


@commands.command()
def lab(port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_LAB_PORT, 8888)")] = None) -> None:
    """Serve JupyterLab on the notebooks, with a token (MNIST_HITL_LAB_TOKEN, or a new one printed here)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.lab import lab_command, lab_environment, lab_folder, lab_url, with_token

    settings = with_token(get_settings())
    folder = lab_folder(settings)
    command = lab_command(settings, folder, port=port)
    typer.echo(f"jupyterlab: {lab_url(settings, port)} (notebooks in {folder})", err=True)
    os.execvpe(command[0], command, lab_environment(settings))


@commands.command()
def metrics(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_METRICS_PORT, 9108)")] = None,
) -> None:
    """Serve the Prometheus metrics of every mnist-hitl process on one endpoint."""
    from mnist_hitl.services.exporter import serve_exporter

    serve_exporter(port=port)


@commands.command()
def follow(once: Annotated[bool, typer.Option(help="sync once, print the outcome as JSON and exit")] = False) -> None:
    """Serve the MLflow registry's champion on this node (MNIST_HITL_MODEL_SOURCE=registry), checked every
    MNIST_HITL_REGISTRY_POLL_SECONDS; running predictors switch by themselves."""
    import logging
    import signal
    import threading

    from mnist_hitl.config import get_settings
    from mnist_hitl.model import ModelFileError, deployed_model
    from mnist_hitl.model.follow import RegistryError, follow, sync_from_registry

    settings = get_settings()
    if settings.model_source != "registry":
        fail("MNIST_HITL_MODEL_SOURCE is local: set it to registry to serve the registry's champion here")
    if once:
        try:
            changed = sync_from_registry(settings)
        except (RegistryError, ModelFileError) as error:
            fail(str(error))
        typer.echo(json.dumps({"model_version": deployed_model(settings.models_dir).version, "changed": bool(changed)}))
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mnist_hitl").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    follow(settings, stop)


@commands.command(name="prefect-server")
def prefect_server(
    host: Annotated[str | None, typer.Option(help="the address to bind (default MNIST_HITL_APP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_PREFECT_PORT, 4200)")] = None,
) -> None:
    """Serve Prefect's server (UI and API) behind a Host check (MNIST_HITL_ALLOWED_HOSTS), CSRF protection on."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.prefect_server import serve_prefect

    serve_prefect(get_settings(), host=host, port=port)


@commands.command()
def mlflow(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_MLFLOW_PORT, 5000)")] = None,
    backend_store_uri: Annotated[
        str | None, typer.Option(help="the runs' and the registry's database (default: the stack's tracking store)")
    ] = None,
    artifacts_destination: Annotated[
        str | None, typer.Option(help="serve the artifacts from here, through the server (several machines)")
    ] = None,
    allowed_hosts: Annotated[
        str | None, typer.Option(help="MLflow's Host check: name:port patterns, comma-separated")
    ] = None,
) -> None:
    """Serve MLflow's tracking server and UI on the stack's runs, registry and artifacts (MLFLOW_TRACKING_URI)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.mlflow_server import MlflowServer, serve_mlflow

    settings = get_settings(mlflow_port=port)
    serve_mlflow(settings, MlflowServer.of(settings, backend_store_uri, artifacts_destination, allowed_hosts))


@commands.command()
def prometheus(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_PROMETHEUS_PORT, 9090)")] = None,
) -> None:
    """Serve Prometheus, scraping the local stack (its config written from the settings, its data in the home)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.tools import prometheus_command, write_prometheus_config

    settings = get_settings(prometheus_port=port)
    try:
        command = prometheus_command(settings)
    except FileNotFoundError as error:
        fail(str(error))
    write_prometheus_config(settings)
    os.execvp(command[0], command)


@commands.command()
def dashboards(
    minutes: Annotated[float, typer.Option(min=1, help="the time window, up to now")] = 60,
    prometheus_url: Annotated[
        str | None, typer.Option(help="Prometheus' address (default http://127.0.0.1:MNIST_HITL_PROMETHEUS_PORT)")
    ] = None,
    output_dir: Annotated[Path | None, typer.Option(help="where to write (default runs/metrics-<time>/)")] = None,
) -> None:
    """Draw the Grafana dashboard's panels from Prometheus: metrics.ipynb, executed, and its HTML page."""
    from papermill.exceptions import PapermillExecutionError

    from mnist_hitl.config import get_settings
    from mnist_hitl.services.dashboards import write_report

    try:
        executed, page = write_report(get_settings(), url=prometheus_url, minutes=minutes, output_dir=output_dir)
    except PapermillExecutionError as error:
        fail(f"metrics.ipynb failed: {error.ename}: {error.evalue}")
    typer.echo(json.dumps({"notebook": str(executed), "html": str(page) if page else None}))


@commands.command(name="wait-for")
def wait_for(
    url: Annotated[str, typer.Argument(help="the address to ask (a health endpoint)")],
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 300.0,
) -> None:
    """Wait until URL answers 200 (a service's start-up waits for another; the containers' healthchecks)."""
    from mnist_hitl.clock import wait_for as answers_within

    if not answers_within(url, timeout):
        fail(f"{url} did not answer within {timeout:.0f} s")


@commands.command()
def prepare() -> None:
    """Create the data folders and remove the metrics files of ended processes (each container's start)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.stack import prepare_home

    prepare_home(get_settings())
