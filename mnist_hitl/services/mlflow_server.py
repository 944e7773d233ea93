"""MLflow's tracking server (UI and REST API) served in this process, and the address of the project's runs.

``mlflow server`` (``mlflow ui`` is its alias) is a process that starts uvicorn as a child and waits
for it: a second interpreter with MLflow imported, doing nothing while the stack is idle. This module
serves the same app the same way in one process: MLflow's FastAPI app (``mlflow.server.fastapi_app``,
the Flask UI and REST API inside it, behind MLflow's own security middleware: its Host check, CORS
and framing rules), configured by the variables ``mlflow server`` hands its child, with MLflow's log
format. Its job runner (huey consumers) is never started, as ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``
asks of ``mlflow server``.

Before serving, it creates the project's experiment if it is missing, so the stack can print its
address (:func:`experiment_url`) and the first cycle finds it.

    mnist-hitl mlflow [--port 5000] [--backend-store-uri URI] [--artifacts-destination DIR] [--allowed-hosts ...]
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.config import Settings
from mnist_hitl.model.registry import EXPERIMENT

SERVED_ARTIFACTS = "mlflow-artifacts:/"  # the artifact root of a server that serves the artifacts itself


@dataclass(frozen=True)
class MlflowServer:
    """What ``mnist-hitl mlflow`` serves: the stores, where the artifacts go, the names it answers to.

    Attributes:
        backend_store_uri: the runs' and the registry's database.
        artifact_root: where new experiments keep their artifacts (``mlflow-artifacts:/`` when served).
        artifacts_destination: the folder the server serves artifacts from, or None (clients write them).
        allowed_hosts: MLflow's Host check (``name:port`` patterns, comma-separated), or None for its default.
    """

    backend_store_uri: str
    artifact_root: str
    artifacts_destination: str | None = None
    allowed_hosts: str | None = None

    @classmethod
    def of(
        cls,
        settings: Settings,
        backend_store_uri: str | None = None,
        artifacts_destination: str | None = None,
        allowed_hosts: str | None = None,
    ) -> MlflowServer:
        """The stack's tracking store and artifact folder unless told otherwise (``mlflow server``'s options)."""
        root = SERVED_ARTIFACTS if artifacts_destination else str(settings.mlflow_artifacts_dir)
        return cls(backend_store_uri or settings.tracking_uri, root, artifacts_destination, allowed_hosts)

    def environment(self) -> dict[str, str]:
        """The variables ``mlflow server`` gives the process that serves its app (mlflow.server._run_server)."""
        env = {
            "_MLFLOW_SERVER_FILE_STORE": self.backend_store_uri,
            "_MLFLOW_SERVER_REGISTRY_STORE": self.backend_store_uri,
            "_MLFLOW_SERVER_ARTIFACT_ROOT": self.artifact_root,
            "_MLFLOW_SGI_NAME": "uvicorn",
            "_MLFLOW_SERVER_BOOT_ID": uuid.uuid4().hex,
            "_MLFLOW_IN_JOB_EXECUTOR": "false",
            "MLFLOW_ENABLE_WORKSPACES": "false",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # nothing here would run its jobs
        }
        if self.artifacts_destination:
            env["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
            env["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = self.artifacts_destination
        if self.allowed_hosts:
            env["MLFLOW_SERVER_ALLOWED_HOSTS"] = self.allowed_hosts
        return env


def serve_mlflow(settings: Settings, server: MlflowServer) -> None:
    """Serve MLflow on the settings' address until SIGINT or SIGTERM (uvicorn finishes its requests, then exits)."""
    config.use_tool_environment(settings)  # telemetry off (MLflow's UI asks the server, which says so)
    for name, value in server.environment().items():
        config.export(name, value)  # before mlflow.server is imported: it reads them then

    import uvicorn
    from mlflow.server.handlers import initialize_backend_stores

    initialize_backend_stores(server.backend_store_uri, server.backend_store_uri, server.artifact_root)
    project = ensure_experiment(server)
    from mlflow.server import fastapi_app as mlflow_app
    from mlflow.server.fastapi_app import app

    host, port = settings.app_host, settings.mlflow_port
    artifacts = server.artifacts_destination or server.artifact_root
    print(f"MLflow: http://{host}:{port}/#/experiments/{project} (artifacts in {artifacts})", flush=True)
    log_format = Path(mlflow_app.__file__).parent / "uvicorn_log_config.yaml"  # the one `mlflow server` gives uvicorn
    uvicorn.run(app, host=host, port=port, log_config=str(log_format) if log_format.is_file() else None)


def ensure_experiment(server: MlflowServer) -> str:
    """The project's experiment id, the experiment created if missing (its artifacts where a cycle would put them)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=server.backend_store_uri, registry_uri=server.backend_store_uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None if server.artifacts_destination else Path(server.artifact_root).resolve().as_uri()
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location)
    except MlflowException:  # created meanwhile by a cycle
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


def experiment_url(base: str, experiment_id: str | None) -> str:
    """The MLflow UI's page of an experiment, or the UI itself when the id is not known."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}" if experiment_id else base


def stored_experiment_id(tracking_uri: str) -> str | None:
    """The project's experiment id read from a local SQLite store without importing MLflow, or None.

    None for any other store, or when the file or the experiment does not exist yet (the MLflow
    service creates it as it starts: :func:`served_experiment_id` then finds it).
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    if not path.is_file():
        return None
    query = "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'"
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)) as db:
            row = db.execute(query, (EXPERIMENT,)).fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def served_experiment_id(base: str, timeout: float = 5.0) -> str | None:
    """The project's experiment id, asked of a running MLflow server over its REST API, or None."""
    query = urllib.parse.urlencode({"experiment_name": EXPERIMENT})
    url = f"{base.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(json.load(answer)["experiment"]["experiment_id"])
    except (OSError, ValueError, KeyError):
        return None
