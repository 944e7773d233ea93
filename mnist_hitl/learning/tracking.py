"""MLflow records of the learning loop: runs, artifacts, the registered model and its champion.

One parent run per cycle (``cycle <id>``) with nested runs ``monitor`` and
``retrain``. The cycle creates the runs and hands their ids to the notebooks
(papermill parameters), which log into them; the cycle logs the executed
notebooks and ends the runs. The embedded default is a SQLite database and a
local artifact folder under ``MNIST_HITL_HOME/mlflow``; ``MLFLOW_TRACKING_URI``
points anywhere else.

Every challenger is logged with the Keras flavour and registered as
``mnist-hitl-cnn``; a promotion moves the ``champion`` alias and stamps the
version (``promoted_at``), so :func:`promotion_history` reads them back in order.
Its LiteRT export (``litert/``) and its ``.keras`` file (``keras/``) go into the same
run as plain files, and the version is tagged with each one's file name and SHA-256: a
node with no shared disk (:mod:`mnist_hitl.model.follow`) fetches and checks the champion's
files from them, the export to serve, the Keras file to retrain from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

from mnist_hitl.clock import utc_now
from mnist_hitl.config import Settings

# The registry's names and client, re-exported: the learning half reads them as ``tracking.X``.
from mnist_hitl.model.registry import ACCURACY_TAG as ACCURACY_TAG
from mnist_hitl.model.registry import CHAMPION as CHAMPION
from mnist_hitl.model.registry import CYCLE_TAG as CYCLE_TAG
from mnist_hitl.model.registry import EXPERIMENT as EXPERIMENT
from mnist_hitl.model.registry import KERAS_ARTIFACTS as KERAS_ARTIFACTS
from mnist_hitl.model.registry import KERAS_FILE_TAG as KERAS_FILE_TAG
from mnist_hitl.model.registry import KERAS_SHA256_TAG as KERAS_SHA256_TAG
from mnist_hitl.model.registry import KIND_TAG as KIND_TAG
from mnist_hitl.model.registry import LITERT_ARTIFACTS as LITERT_ARTIFACTS
from mnist_hitl.model.registry import LITERT_FILE_TAG as LITERT_FILE_TAG
from mnist_hitl.model.registry import LITERT_SHA256_TAG as LITERT_SHA256_TAG
from mnist_hitl.model.registry import NOTE_TAG as NOTE_TAG
from mnist_hitl.model.registry import REGISTERED_MODEL as REGISTERED_MODEL
from mnist_hitl.model.registry import VERSION_TAG as VERSION_TAG
from mnist_hitl.model.registry import client as client
from mnist_hitl.model.registry import embedded as embedded
from mnist_hitl.model.registry import quiet as quiet
from mnist_hitl.model.registry import reachable as reachable

log = logging.getLogger(__name__)


def experiment_id(settings: Settings, mlflow_client=None) -> str:
    """The loop's experiment, created on first use (artifacts under the home folder when embedded)."""
    from mlflow.exceptions import MlflowException

    mlflow_client = mlflow_client or client(settings)
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = settings.mlflow_artifacts_dir.as_uri() if embedded(settings.tracking_uri) else None
    try:
        return mlflow_client.create_experiment(EXPERIMENT, artifact_location=location)
    except MlflowException:  # created meanwhile by another process
        return mlflow_client.get_experiment_by_name(EXPERIMENT).experiment_id


def start_run(
    settings: Settings,
    name: str,
    kind: str,
    cycle_id: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a run (nested under ``parent_run_id`` if given) and return its id."""
    mlflow_client = client(settings)
    all_tags = {KIND_TAG: kind, CYCLE_TAG: cycle_id, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(experiment_id(settings, mlflow_client), run_name=name, tags=all_tags)
    return run.info.run_id


def end_run(settings: Settings, run_id: str, status: str = "FINISHED") -> None:
    client(settings).set_terminated(run_id, status)


class RunLog:
    """Log into one existing run by id; with no id every call does nothing (a notebook run by hand).

    Args:
        settings: the tracking URI.
        run_id: the run to log into, or ``None``/"".
    """

    def __init__(self, settings: Settings, run_id: str | None) -> None:
        self.settings = settings
        self.run_id = run_id or None
        self._client = client(settings) if self.run_id else None

    def __bool__(self) -> bool:
        return self.run_id is not None

    def params(self, values: Mapping[str, object]) -> None:
        if not self:
            return
        from mlflow.entities import Param

        params = [Param(_key(k), _text(v)[:6000]) for k, v in values.items()]
        for start in range(0, len(params), 100):
            self._client.log_batch(self.run_id, params=params[start : start + 100])

    def metrics(self, values: Mapping[str, float | int | None], step: int = 0) -> None:
        """Log numeric values; ``None`` and NaN are left out."""
        if not self:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(_key(k), float(v), now, step)
            for k, v in values.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        for start in range(0, len(metrics), 500):
            self._client.log_batch(self.run_id, metrics=metrics[start : start + 500])

    def tags(self, values: Mapping[str, object]) -> None:
        if not self:
            return
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(_key(k), _text(v)[:8000]) for k, v in values.items()])

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Upload a file (or a folder's files) if it exists."""
        path = Path(path)
        if not self or not path.exists():
            return
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), folder)
        else:
            self._client.log_artifact(self.run_id, str(path), folder)

    def json(self, data: object, name: str) -> None:
        if self:
            self._client.log_dict(self.run_id, data, name)


def note(headline: str, reasons: list[str] | tuple[str, ...] = (), *details: str) -> str:
    """A run's description (Markdown): the decision or verdict in bold, then its reasons, then any details."""
    lines = [f"**{headline}**", "", *(f"- {reason}" for reason in reasons)]
    return "\n".join([*lines, *(["", *details] if details else [])]).strip()


def _key(name: object) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(name))


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# the model ---------------------------------------------------------------------------


def log_keras_model(
    settings: Settings,
    run_id: str,
    network,
    version: str,
    tflite_path: Path | None = None,
    accuracy: float | None = None,
    keras_path: Path | None = None,
) -> str:
    """Log a Keras model into a run (with signature and pinned requirements) and register it.

    Args:
        tflite_path: its LiteRT export, logged under ``litert/`` and named, with its SHA-256, in
            the registered version's tags (what a serving node fetches).
        accuracy: its holdout accuracy, tagged on the registered version too.
        keras_path: its ``.keras`` file as saved, logged under ``keras/`` and tagged the same way
            (what a cycle node with no shared disk retrains from).

    Returns:
        The registered model version (as text).
    """
    quiet()
    import mlflow
    import mlflow.keras

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    mlflow_client = client(settings)
    status = mlflow_client.get_run(run_id).info.status
    files = _model_files(tflite_path, keras_path)
    for folder, (path, _, _) in files.items():  # before the version exists: no tag ever names a missing file
        mlflow_client.log_artifact(run_id, str(path), folder)
    signature, requirements = _keras_signature()
    with mlflow.start_run(run_id=run_id):
        info = mlflow.keras.log_model(
            network,
            name="model",
            signature=signature,
            pip_requirements=requirements,
            registered_model_name=REGISTERED_MODEL,
            tags={VERSION_TAG: version},
        )
    if status == "RUNNING":  # start_run(run_id) ends the run on exit; the cycle ends it when it is done
        mlflow_client.update_run(run_id, status="RUNNING")
    registered = str(info.registered_model_version)
    tags = {VERSION_TAG: version, "run_id": run_id}
    for path, file_tag, sha256_tag in files.values():
        tags |= {file_tag: path.name, sha256_tag: hashlib.sha256(path.read_bytes()).hexdigest()}
    if accuracy is not None:
        tags[ACCURACY_TAG] = repr(float(accuracy))
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(REGISTERED_MODEL, registered, key, value)
    return registered


def _model_files(tflite_path: Path | None, keras_path: Path | None) -> dict[str, tuple[Path, str, str]]:
    """The files logged beside a model, by artifact folder: their path, file-name tag and SHA-256 tag."""
    return {
        folder: (Path(path), file_tag, sha256_tag)
        for folder, path, file_tag, sha256_tag in (
            (LITERT_ARTIFACTS, tflite_path, LITERT_FILE_TAG, LITERT_SHA256_TAG),
            (KERAS_ARTIFACTS, keras_path, KERAS_FILE_TAG, KERAS_SHA256_TAG),
        )
        if path is not None
    }


def _keras_signature() -> tuple[object, list[str]]:
    """The logged model's signature (a 28x28x1 digit in, ten probabilities out) and its pinned requirements."""
    import keras
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 28, 28, 1), "digit")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10), "probabilities")]),
    )
    return signature, [f"keras=={keras.__version__}", f"tensorflow-cpu=={_version('tensorflow')}"]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in (f"{package}-cpu", package):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def mark_promotion(settings: Settings, mlflow_version: str, version: str, promoted: bool, reasons: list[str]) -> None:
    """Tag a registered version promoted or rejected; a promotion moves the champion alias."""
    mlflow_client = client(settings)
    mlflow_client.set_model_version_tag(
        REGISTERED_MODEL, mlflow_version, "status", "promoted" if promoted else "rejected"
    )
    mlflow_client.set_model_version_tag(REGISTERED_MODEL, mlflow_version, "reasons", " | ".join(reasons)[:5000])
    if promoted:
        mlflow_client.set_model_version_tag(REGISTERED_MODEL, mlflow_version, "promoted_at", utc_now())
        mlflow_client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, mlflow_version)


def champion(settings: Settings) -> dict | None:
    """The registered version the ``champion`` alias points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client(settings).get_model_version_by_alias(REGISTERED_MODEL, CHAMPION)
    except MlflowException:
        return None
    return _version_record(found)


def promotion_history(settings: Settings) -> list[dict]:
    """Every promoted version, oldest first: mlflow version, model version, time, run, champion or not."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        versions = mlflow_client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    except MlflowException:
        return []
    current = champion(settings)
    records = [_version_record(v) for v in versions if "promoted_at" in (v.tags or {})]
    for record in records:
        record["champion"] = current is not None and record["mlflow_version"] == current["mlflow_version"]
    return sorted(records, key=lambda r: (r["promoted_at"], int(r["mlflow_version"])))


def registered_versions(settings: Settings) -> list[dict]:
    """Every registered version of the model, oldest first, with its tags (status, reasons, promoted_at)
    and whether the ``champion`` alias points at it; empty when there is no registry yet."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client(settings).search_model_versions(f"name = '{REGISTERED_MODEL}'")
    except MlflowException:
        return []
    current = champion(settings)
    records = [
        {
            **_version_record(v),
            "reasons": (v.tags or {}).get("reasons"),
            "champion": current is not None and str(v.version) == current["mlflow_version"],
        }
        for v in versions
    ]
    return sorted(records, key=lambda r: int(r["mlflow_version"]))


def _version_record(found) -> dict:
    tags = found.tags or {}
    return {
        "mlflow_version": str(found.version),
        "version": tags.get(VERSION_TAG),
        "run_id": found.run_id,
        "status": tags.get("status"),
        "promoted_at": tags.get("promoted_at"),
    }


def sync_champion(settings: Settings, deployed_version: str) -> bool:
    """Point the champion alias at the deployed model's registered version, if it has one and differs.

    Returns:
        True when the alias was moved (a cycle died between deployment and tagging).
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        versions = mlflow_client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    except MlflowException:
        return False
    matching = [v for v in versions if (v.tags or {}).get(VERSION_TAG) == deployed_version]
    if not matching:
        return False
    current = champion(settings)
    if current and current["version"] == deployed_version:
        return False
    mark_promotion(
        settings,
        str(matching[0].version),
        deployed_version,
        True,
        ["deployed by a cycle that was interrupted before tagging"],
    )
    return True


def fail_stale_runs(settings: Settings, cycle_id: str) -> int:
    """Mark the still-running runs of an interrupted cycle KILLED; returns how many."""
    mlflow_client = client(settings)
    runs = mlflow_client.search_runs(
        [experiment_id(settings, mlflow_client)], filter_string=f"tags.`{CYCLE_TAG}` = '{cycle_id}'"
    )
    stale = [run for run in runs if run.info.status == "RUNNING"]
    for run in stale:
        mlflow_client.set_terminated(run.info.run_id, "KILLED")
    return len(stale)


def snapshot_sqlite(source: str | Path, target: str | Path) -> Path:
    """A consistent copy of a SQLite database (e.g. the Optuna study) for logging as an artifact."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    with closing(sqlite3.connect(str(source))) as src, closing(sqlite3.connect(str(target))) as dst:
        src.backup(dst)
    return target


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL, or None for other URLs."""
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
