"""The local stack: every service a user needs, started by ``mnist-hitl run``.

The services are the lines of the repository's ``Procfile``, run by honcho: the
drawing app (Voila), the HTTP API, the Prefect server and the hourly learning cycle served to it,
the MLflow UI, JupyterLab on the notebooks, the metrics exporter and, when the ``prometheus`` binary is installed,
Prometheus; with ``MNIST_HITL_MODEL_SOURCE=registry``, also the follower of the registry's champion
(:mod:`mnist_hitl.model.follow`), which listens on no port. Each binds ``MNIST_HITL_APP_HOST`` (127.0.0.1)
on its configured port. Every line is a ``mnist-hitl`` command (MLflow's and Prometheus' too: :mod:`.tools`),
run with :func:`stack_environment`. Each one's output goes to ``$MNIST_HITL_HOME/logs/<service>.log``
(:mod:`.logs`); the terminal shows the table of services, then one line per event (:mod:`.console`).
Ctrl-C stops them all. Starting again reuses everything under ``MNIST_HITL_HOME``: the
deployed model, the store, the MLflow and Prefect databases, Prometheus' data, the logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mnist_hitl import config
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.resources import resource
from mnist_hitl.services.console import StackConsole, watch_ports
from mnist_hitl.services.lab import with_token
from mnist_hitl.services.logs import log_folder, open_logs
from mnist_hitl.services.mlflow_server import experiment_url, served_experiment_id, stored_experiment_id


@dataclass(frozen=True)
class Service:
    """One line of the Procfile, as the user sees it."""

    name: str
    port: int | None  # None: it listens on no port (the follower)
    url: str
    what: str


def services(settings: Settings, with_prometheus: bool) -> list[Service]:
    """The services of the stack, in Procfile order, with the URL each answers on."""
    host = settings.app_host

    def url(port: int, path: str = "/") -> str:
        return f"http://{host}:{port}{path}"

    found = [
        Service("app", settings.app_port, url(settings.app_port), "the drawing app"),
        Service("api", settings.api_port, url(settings.api_port, "/docs"), "the HTTP API (OpenAPI docs)"),
        Service("prefect", settings.prefect_port, url(settings.prefect_port), "Prefect server (UI and API)"),
        Service(
            "schedule",
            settings.prefect_port,
            url(settings.prefect_port, "/deployments"),
            f"the learning cycle, every {settings.cycle_minutes} min, served to Prefect",
        ),
        Service(
            "mlflow",
            settings.mlflow_port,
            experiment_url(url(settings.mlflow_port), stored_experiment_id(settings.tracking_uri)),
            "MLflow UI: the project's runs",
        ),
        Service(
            "lab",
            settings.lab_port,
            url(settings.lab_port, f"/lab?token={settings.lab_token}"),
            "JupyterLab on the notebooks",
        ),
        Service("metrics", settings.metrics_port, url(settings.metrics_port, "/metrics"), "Prometheus metrics"),
    ]
    if with_prometheus:
        found.append(Service("prometheus", settings.prometheus_port, url(settings.prometheus_port), "Prometheus"))
    if settings.model_source == "registry":
        from mnist_hitl.model.follow import registry_location

        what = f"serves the registry's champion, checked every {settings.registry_poll_seconds:g} s"
        found.append(Service("follow", None, registry_location(settings), what))
    return found


def procfile_services(procfile: Path | None = None) -> list[str]:
    """The names of the Procfile's lines: every service the stack may run."""
    from honcho.environ import parse_procfile

    return list(parse_procfile(Path(procfile or resource("Procfile")).read_text()).processes)


def stack_environment(settings: Settings) -> dict[str, str]:
    """The environment of every service: the settings, spelled out, and the tools' own variables."""
    return config.child_environment(
        settings,
        {
            **({"MNIST_HITL_LAB_TOKEN": settings.lab_token} if settings.lab_token else {}),
            "MNIST_HITL_MODEL_SOURCE": settings.model_source,
            "MNIST_HITL_REGISTRY_POLL_SECONDS": str(settings.registry_poll_seconds),
        },
    )


def prepare_home(settings: Settings) -> list[Path]:
    """Create the folders the services write to and clean the metrics folder.

    Returns:
        The metrics files removed (those of processes that have ended).
    """
    from mnist_hitl.metrics import clean_metrics_dir

    for folder in (settings.home, settings.prefect_home, settings.mlflow_artifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return clean_metrics_dir(settings)


def busy_ports(settings: Settings, stack: list[Service]) -> list[Service]:
    """The services whose port is taken already."""
    busy = []
    for service in {s.port: s for s in reversed(stack) if s.port is not None}.values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.app_host, service.port))
            except OSError:
                busy.append(service)
    return sorted(busy, key=stack.index)


def first_model(settings: Settings) -> tuple[str, bool]:
    """The deployed model's version, and whether it was trained now: when none is deployed, by ``mnist-hitl init``
    (with ``MNIST_HITL_MODEL_SOURCE=registry``, fetched from the registry instead: a serving node does not train).

    Training runs in a child process, so TensorFlow (its import alone costs seconds and
    hundreds of MB) leaves with it instead of staying in the supervisor for the stack's
    whole life. Its progress bar goes to this terminal (stderr), without TensorFlow's C++ log
    lines (:func:`without_absl_lines`); its result, a JSON line, to us.

    Raises:
        SystemExit: the training failed (its messages are on the terminal already).
    """
    from mnist_hitl.model import ModelFileError, deployed_model, read_export

    try:
        deployed = deployed_model(settings.models_dir)
        read_export(deployed)  # there, and as deployed (the checksum); no interpreter needed here
        return deployed.version, False
    except ModelFileError:
        pass
    if settings.model_source == "registry":
        return _champion_from_registry(settings), False
    terminal = getattr(sys.stderr, "buffer", None)  # None: a stderr of text only, passed through as it is
    child = subprocess.Popen(
        [sys.executable, "-m", "mnist_hitl.cli", "init"],
        env=config.child_environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if terminal is not None else None,
    )
    console = threading.Thread(target=without_absl_lines, args=(child.stderr, terminal), daemon=True)
    if terminal is not None:
        console.start()
    output = child.stdout.read().decode(errors="replace")
    returncode = child.wait()
    if terminal is not None:
        console.join(timeout=5)
    if returncode != 0:
        print(f"error: training the first model failed (exit status {returncode})", file=sys.stderr)
        raise SystemExit(returncode or 1)
    results = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    trained = bool(results and results[-1].get("trained"))
    return deployed_model(settings.models_dir).version, trained


# absl's log lines, TensorFlow's C++ side ("E0000 00:00:1796624527.887037   25460 node_def_util.cc:682] ..."),
# and the warning before the first of them: noise to a person waiting for the first model.
ABSL_LINE = re.compile(rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::")
SEGMENT = re.compile(rb"[^\r\n]*[\r\n]")


def without_absl_lines(source: BinaryIO, target: BinaryIO) -> None:
    """Copy ``source`` to ``target`` until it ends, leaving out absl's log lines.

    A line goes out as soon as it ends, with ``\n`` or with the ``\r`` of a progress bar's
    redraw, so the training's progress bar still moves.
    """
    pending = b""
    while chunk := os.read(source.fileno(), 65536):
        pending += chunk
        done = 0
        for segment in SEGMENT.finditer(pending):
            target.write(_before_absl(segment.group()))
            done = segment.end()
        pending = pending[done:]
        target.flush()
    target.write(_before_absl(pending))
    target.flush()


def _before_absl(segment: bytes) -> bytes:
    """The segment up to an absl line in it (one may follow a progress bar's text on the same line)."""
    found = ABSL_LINE.search(segment)
    return segment if found is None else segment[: found.start()]


def _champion_from_registry(settings: Settings) -> str:
    """Serve the registry's champion here before the stack starts; SystemExit when it cannot be fetched."""
    from mnist_hitl.model import ModelFileError, deployed_model
    from mnist_hitl.model.follow import RegistryError, sync_from_registry

    try:
        sync_from_registry(settings)
    except (RegistryError, ModelFileError) as error:
        print(f"error: no model is deployed here and {error}", file=sys.stderr)
        raise SystemExit(1) from None
    return deployed_model(settings.models_dir).version


def run_stack(settings: Settings | None = None, procfile: Path | None = None) -> int:
    """Start every service, print where each listens, and run until Ctrl-C.

    Trains the first model only if none is deployed, and removes only the metrics
    files of processes that have ended; nothing else under ``MNIST_HITL_HOME`` is touched
    but the services' logs, which it appends to.

    Returns:
        0 once stopped by Ctrl-C (or SIGTERM).

    Raises:
        SystemExit: a port is taken, or a service stopped by itself (then all are stopped).
    """
    from honcho.environ import parse_procfile

    settings = with_token(settings or get_settings())  # one lab token, printed below and given to the lab
    with_prometheus = shutil.which("prometheus") is not None
    stack = services(settings, with_prometheus)
    _refuse_busy_ports(settings, stack)

    removed = prepare_home(settings)
    version, trained = first_model(settings)
    print(f"model {version} is deployed" + (" (trained now)" if trained else ""))
    if removed:
        print(f"removed the metrics files of {len(removed)} ended processes from {settings.metrics_dir}")
    commands = parse_procfile(Path(procfile or resource("Procfile")).read_text()).processes
    _print_services(settings, stack, with_prometheus)
    returncode = supervise(settings, stack, commands)
    if returncode in (130, 143):  # stopped by Ctrl-C or SIGTERM, as asked
        return 0
    print(f"a service stopped by itself (exit status {returncode}); everything is stopped", file=sys.stderr)
    raise SystemExit(returncode or 1)


def supervise(settings: Settings, stack: list[Service], commands: dict[str, str]) -> int:
    """Run the services with honcho until one stops or we are told to stop; honcho's return code.

    Every line a service prints goes to its log; the terminal gets the events (:mod:`.console`).
    """
    env = stack_environment(settings)
    folder = log_folder(settings)
    logs = open_logs(folder, [service.name for service in stack])
    console = StackConsole(sys.stdout, logs, folder)
    manager = _relay_manager()(printer=console)
    for service in stack:
        manager.add_process(service.name, commands[service.name], env=env, cwd=str(settings.home))
    done = threading.Event()
    watcher = threading.Thread(
        target=watch_ports,
        args=(console, _listening(settings, stack), done, _ready_details(settings)),
        name="ready-watch",
        daemon=True,
    )
    watcher.start()
    try:
        manager.loop()
    finally:
        done.set()
        watcher.join(timeout=5)
        for log in logs.values():
            log.close()
    return manager.returncode


def _relay_manager():
    """honcho's Manager with its relays (one per service, reading its output) as threads, not forked processes.

    A forked copy of the supervisor per service costs a few MB each for a loop that reads a pipe;
    a thread costs nothing. Signals stay with the main thread, where honcho handles them.
    """
    import queue

    from honcho.manager import Manager

    class RelayThreads(Manager):
        def __init__(self, printer=None) -> None:
            super().__init__(printer)
            self.events = queue.Queue()

        def _start(self) -> None:
            for name, process in self._processes.items():
                relay = threading.Thread(target=process["obj"].run, args=(self.events, False), name=name, daemon=True)
                process["process"] = relay
                relay.start()

    return RelayThreads


def _probe_host(settings: Settings) -> str:
    """The address to reach the services at from here (a wildcard bind is reached on loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.app_host, settings.app_host)


def _listening(settings: Settings, stack: list[Service]) -> dict[str, tuple[str, int]]:
    """The address each service that listens answers on; the schedule is ready when it says so."""
    host = _probe_host(settings)
    return {s.name: (host, s.port) for s in stack if s.port is not None and s.name != "schedule"}


def _ready_details(settings: Settings):
    """MLflow's ready line names the project's experiment page (the service creates the experiment as it starts)."""
    shown = f"http://{settings.app_host}:{settings.mlflow_port}"
    asked = f"http://{_probe_host(settings)}:{settings.mlflow_port}"
    return {"mlflow": lambda: experiment_url(shown, served_experiment_id(asked))}


def _refuse_busy_ports(settings: Settings, stack: list[Service]) -> None:
    """SystemExit, one line per taken port on stderr, when a service's port is taken."""
    busy = busy_ports(settings, stack)
    for service in busy:
        print(
            f"error: port {service.port} ({service.name}) is in use on {settings.app_host}; "
            f"stop what uses it or choose another port (see mnist_hitl/config.py)",
            file=sys.stderr,
        )
    if busy:
        raise SystemExit(1)


def _print_services(settings: Settings, stack: list[Service], with_prometheus: bool) -> None:
    """One line per service: its name, its URL, what it is; then where the logs are."""
    width = max(len(s.name) for s in stack)
    print(f"mnist-hitl stack, data in {settings.home}:")
    for service in stack:
        print(f"  {service.name:<{width}}  {service.url:<38} {service.what}")
    if not with_prometheus:
        print(f"  {'prometheus':<{width}}  not installed (apt-get install prometheus), not started")
    print(f"Each service's output: {log_folder(settings)}/<service>.log (mnist-hitl logs [SERVICE] [-f]).")
    print("Ctrl-C stops everything.", flush=True)
