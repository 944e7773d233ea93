"""Deployment: the one place a model version is published, for the first model and every challenger.

:func:`publish` walks one path whatever the version becomes (deployed, rejected, or kept as a
candidate by a dry run). The order is what makes a killed process harmless:

1. the model file and its LiteRT export (``models/model_<version>.*``), and the store's record
   as ``candidate``;
2. the MLflow model version, registered from the run that made it (when it is recorded);
3. for a deployment, the export checked (a predictor can load it) and ``latest.json`` replaced,
   atomically (:func:`mnist_hitl.model.write_pointer`): it names the deployed files and records the
   export's SHA-256; then the record as ``deployed`` (or ``rejected``, the files staying);
4. the registered version tagged, and for a deployment the ``champion`` alias moved.

A process killed at any point leaves the previous deployment serving;
:func:`reconcile` settles the store's record at the next cycle.

``latest.json`` is the one source of truth: the deployed files are never copied under
another name; read the champion with :func:`deployed_keras_path`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain import network as model_lib
from mnist_hitl.learning.retrain.network import SavedModel
from mnist_hitl.learning.retrain.promotion import Comparison, Verdict
from mnist_hitl.model import (
    DEPLOYED_POINTER,
    Deployed,
    ModelFileError,
    deployed_model,
    load_deployed,
    load_export,
    write_pointer,
)
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

DEPLOYED, REJECTED, CANDIDATE = "deployed", "rejected", "candidate"  # what a published version becomes

# Copies of the deployed files that mnist-hitl wrote before latest.json named them; reconcile removes them.
RETIRED_COPIES = ("latest.keras", "latest.tflite")


@dataclass
class Outcome:
    """What became of a saved model: ``deployed``, ``rejected`` or ``candidate`` (a dry run)."""

    version: str
    status: str
    keras_file: str
    mlflow_version: str | None = None
    pointer: dict | None = None

    def as_json(self) -> dict:
        return asdict(self)


def has_deployed_model(settings: Settings) -> bool:
    """True when a usable deployed model exists: the pointer, and an export that passes its checksum and loads."""
    try:
        load_deployed(settings.models_dir)
    except ModelFileError:
        return False
    return True


def deployed_keras_path(settings: Settings) -> Path:
    """The deployed model's ``.keras`` file, as ``latest.json`` names it (the champion of a retraining).

    Raises:
        ModelFileError: nothing is deployed, or the pointer names no Keras file.
    """
    deployed = deployed_model(settings.models_dir)
    if deployed.keras_path is None:
        raise ModelFileError(f"{settings.models_dir / DEPLOYED_POINTER} names no Keras file", "bad_pointer")
    return deployed.keras_path


def publish(
    settings: Settings,
    store: Store,
    network,
    accuracy: float,
    record: dict,
    *,
    becomes: str = DEPLOYED,
    reasons: list[str] | None = None,
    run_id: str | None = None,
    version: str | None = None,
    mlflow_optional: bool = False,
) -> Outcome:
    """Publish a trained model as a new version: saved, registered, then deployed, rejected or kept.

    Args:
        settings: where the models live, and the tracking URI.
        store: where the version is recorded.
        network: the trained Keras model.
        accuracy: its MNIST holdout accuracy.
        record: the store's record of it (parameters, data, reasons...); its MLflow run and version are added.
        becomes: ``deployed``, ``rejected``, or ``candidate`` (a dry run: kept on file whatever the verdict).
        reasons: why it is deployed or rejected (the registered version's tags).
        run_id: the MLflow run it is registered from; None: nothing goes to MLflow.
        version: its name (default: a new timestamp).
        mlflow_optional: an MLflow failure is logged and the version published all the same (the first
            model); otherwise it stops the publication where it happened.

    Raises:
        ModelFileError: no predictor could load the export; nothing is deployed.
    """
    saved = model_lib.save_model(network, settings.models_dir, version)
    _record(store, saved, accuracy, CANDIDATE, record)
    mlflow_version = _register(settings, run_id, network, saved, accuracy, record, mlflow_optional) if run_id else None
    pointer = None
    if becomes == DEPLOYED:
        pointer = deploy(settings, store, saved, accuracy, record, mlflow_version, reasons, mlflow_optional)
    elif becomes == REJECTED:
        reject(settings, store, saved, accuracy, record, mlflow_version, reasons or [])
    else:
        _record(store, saved, accuracy, CANDIDATE, {**record, "dry_run": True})
    return Outcome(saved.version, becomes, saved.keras_path.name, mlflow_version, pointer)


def _register(
    settings: Settings, run_id: str, network, saved: SavedModel, accuracy: float, record: dict, optional: bool
) -> str | None:
    """Log the model and its files into ``run_id`` and register it; the record gets the run and the version."""
    from mnist_hitl.learning import tracking

    try:
        mlflow_version = tracking.log_keras_model(
            settings, run_id, network, saved.version, saved.tflite_path, accuracy, saved.keras_path
        )
    except Exception as error:
        if not optional:
            raise
        log.warning("could not record %s in MLflow: %s", saved.version, error)  # the model stands without it
        return None
    record.update(mlflow_run_id=run_id, mlflow_model_version=mlflow_version)
    return mlflow_version


def deploy(
    settings: Settings,
    store: Store,
    saved: SavedModel,
    accuracy: float | None,
    record: dict,
    mlflow_version: str | None = None,
    reasons: list[str] | None = None,
    mlflow_optional: bool = False,
) -> dict:
    """Make a saved model the deployed one: its export checked, the pointer, the record, then the alias.

    Returns:
        The new ``latest.json`` contents.

    Raises:
        ModelFileError: no predictor could load the export; nothing is changed.
    """
    content = saved.tflite_path.read_bytes()
    load_export(Deployed(saved.version, saved.tflite_path, accuracy), content)  # what no predictor can load stays out
    pointer = write_pointer(
        Path(settings.models_dir), saved.version, saved.tflite_path.name, content, accuracy, saved.keras_path.name
    )
    _record(store, saved, accuracy, DEPLOYED, record)
    if mlflow_version:
        _mark(settings, mlflow_version, saved.version, True, reasons or [], mlflow_optional)
    metrics.set_deployed_model(saved.version)
    log.info("deployed %s", saved.version)
    return pointer


def reject(
    settings: Settings,
    store: Store,
    saved: SavedModel,
    accuracy: float,
    record: dict,
    mlflow_version: str | None,
    reasons: list[str],
) -> None:
    """Keep a saved model on file, recorded (and tagged in MLflow) as rejected."""
    _record(store, saved, accuracy, REJECTED, record)
    if mlflow_version:
        _mark(settings, mlflow_version, saved.version, False, reasons, optional=False)
    log.info("rejected %s", saved.version)


def _mark(settings: Settings, mlflow_version: str, version: str, promoted: bool, reasons: list[str], optional: bool):
    """Tag the registered version promoted (moving the ``champion`` alias) or rejected."""
    from mnist_hitl.learning import tracking

    try:
        tracking.mark_promotion(settings, mlflow_version, version, promoted, reasons)
    except Exception as error:
        if not optional:
            raise
        log.warning("could not move the champion alias to %s: %s", version, error)


def _record(store: Store, saved: SavedModel, accuracy: float | None, status: str, record: dict) -> None:
    store.record_model_version(saved.version, saved.keras_path.name, accuracy, status, record)


def apply_verdict(
    settings: Settings,
    store: Store,
    challenger,
    verdict: Verdict,
    comparison: Comparison,
    details: dict,
    run_id: str | None = None,
    deploy_it: bool = True,
) -> Outcome:
    """Publish the challenger as the verdict says: deployed if promoted, else rejected (or kept, a dry run).

    Args:
        settings: where the models live.
        store: where the version is recorded.
        challenger: the trained Keras model.
        verdict: from :func:`mnist_hitl.learning.retrain.promotion.promotion_rule`.
        comparison: both models' scores (kept in the store's record).
        details: anything else for the record (parameters, cycle id, data sizes...).
        run_id: the MLflow run to log the model into (and register it from); none: no MLflow.
        deploy_it: False keeps the challenger on file as a candidate whatever the verdict (a dry run).
    """
    record = {
        **details,
        "comparison": comparison.as_json(),
        "reasons": verdict.reasons,
        "verdict": "promote" if verdict.promote else "reject",
        "mlflow_run_id": run_id,
    }
    becomes = CANDIDATE if not deploy_it else DEPLOYED if verdict.promote else REJECTED
    accuracy = comparison.challenger.mnist_holdout
    return publish(
        settings, store, challenger, accuracy, record, becomes=becomes, reasons=verdict.reasons, run_id=run_id
    )


def reconcile(settings: Settings, store: Store) -> list[str]:
    """Make the store's record agree with the deployed pointer after an interrupted cycle.

    Run while holding the cycle lock. The pointer (``latest.json``) is the truth:
    its version is recorded ``deployed``; any other ``candidate`` was left by a
    cycle that died before deciding, and is recorded ``rejected``. Half-written
    model files (``.*.partial*``) are removed, and so are the ``latest.keras`` and
    ``latest.tflite`` copies older versions wrote (stale from now on).

    Returns:
        What was changed, one line each (empty when all agreed).
    """
    models_dir = Path(settings.models_dir)
    changes = _remove_stale_files(models_dir)
    try:
        deployed = deployed_model(models_dir).version
    except ModelFileError:
        deployed = None
    for row in store.model_versions():
        if row["version"] == deployed and row["status"] != DEPLOYED:
            note = f"deployed but recorded {row['status']} (cycle interrupted after deployment)"
            _rerecord(store, row, DEPLOYED, note)
            changes.append(f"{row['version']}: recorded as deployed (the pointer says so)")
        elif row["version"] != deployed and row["status"] == CANDIDATE and not row["details"].get("dry_run"):
            _rerecord(store, row, REJECTED, "cycle interrupted before promotion")
            changes.append(f"{row['version']}: candidate left by an interrupted cycle, recorded as rejected")
    return changes


def _remove_stale_files(models_dir: Path) -> list[str]:
    """Remove half-written model files and the copies of the deployed files older versions kept."""
    changes = []
    for partial in models_dir.glob(".*partial*"):
        partial.unlink(missing_ok=True)
        changes.append(f"removed half-written {partial.name}")
    for name in RETIRED_COPIES:
        if (models_dir / name).is_file():
            (models_dir / name).unlink()
            changes.append(
                f"removed {name}, a copy older versions kept of the deployed model ({DEPLOYED_POINTER} "
                "names the deployed files)"
            )
    return changes


def _rerecord(store: Store, row: dict, status: str, reconciled: str) -> None:
    """Record a version again with another status, saying why."""
    details = {**row["details"], "reconciled": reconciled}
    store.record_model_version(row["version"], row["file"], row["holdout_accuracy"], status, details)
