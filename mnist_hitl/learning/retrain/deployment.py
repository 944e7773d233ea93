"""Deployment: the one place that writes model files, moves ``latest`` and records a version.

The first model (:func:`mnist_hitl.learning.retrain.training.train_first_model`) and every
challenger (:func:`apply_verdict`) go through :func:`save_version`, then either
:func:`deploy` or a rejection. The order is what makes a killed process harmless:

1. the model file and its LiteRT export (``models/model_<version>.*``);
2. the store's record as ``candidate``, and the MLflow model version;
3. the export checked (a predictor can load it) and ``latest.json`` replaced, atomically:
   it names the deployed files and records the export's SHA-256;
4. the record as ``deployed`` (or ``rejected``; the files stay) and the MLflow alias.

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


def save_version(
    settings: Settings, network, accuracy: float, record: dict, run_id: str | None = None
) -> tuple[SavedModel, str | None]:
    """Write a trained model and its export, record it as ``candidate``, log it to MLflow when ``run_id``.

    Returns:
        The saved files and the registered MLflow version (None without a run).
    """
    saved = model_lib.save_model(network, settings.models_dir)
    _record(settings, saved, accuracy, "candidate", record)
    mlflow_version = None
    if run_id:
        from mnist_hitl.learning import tracking

        mlflow_version = tracking.log_keras_model(
            settings, run_id, network, saved.version, saved.tflite_path, accuracy, saved.keras_path
        )
        record["mlflow_model_version"] = mlflow_version
    return saved, mlflow_version


def deploy(
    settings: Settings,
    saved: SavedModel,
    accuracy: float | None,
    record: dict,
    mlflow_version: str | None = None,
    reasons: list[str] | None = None,
) -> dict:
    """Make a saved model the deployed one: files, then the pointer, then the records.

    Returns:
        The new ``latest.json`` contents.

    Raises:
        ModelFileError: no predictor could load the export; nothing is changed.
    """
    models_dir = Path(settings.models_dir)
    content = saved.tflite_path.read_bytes()
    load_export(Deployed(saved.version, saved.tflite_path, accuracy), content)  # what no predictor can load stays out
    pointer = write_pointer(models_dir, saved.version, saved.tflite_path.name, content, accuracy, saved.keras_path.name)
    _record(settings, saved, accuracy, "deployed", record)
    if mlflow_version:
        from mnist_hitl.learning import tracking

        tracking.mark_promotion(settings, mlflow_version, saved.version, promoted=True, reasons=reasons or [])
    metrics.set_deployed_model(saved.version)
    log.info("deployed %s", saved.version)
    return pointer


def reject(
    settings: Settings, saved: SavedModel, accuracy: float, record: dict, mlflow_version: str | None, reasons: list[str]
) -> None:
    """Keep a saved model on file, recorded (and tagged in MLflow) as rejected."""
    _record(settings, saved, accuracy, "rejected", record)
    if mlflow_version:
        from mnist_hitl.learning import tracking

        tracking.mark_promotion(settings, mlflow_version, saved.version, promoted=False, reasons=reasons)
    log.info("rejected %s", saved.version)


def _record(settings: Settings, saved: SavedModel, accuracy: float | None, status: str, record: dict) -> None:
    with Store(settings.store_location) as store:
        store.record_model_version(saved.version, saved.keras_path.name, accuracy, status, record)


def apply_verdict(
    settings: Settings,
    challenger,
    verdict: Verdict,
    comparison: Comparison,
    details: dict,
    run_id: str | None = None,
    deploy_it: bool = True,
) -> Outcome:
    """Save the challenger, record it, and deploy it if the verdict says so.

    Args:
        settings: where the models and the store live.
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
    accuracy = comparison.challenger.mnist_holdout
    saved, mlflow_version = save_version(settings, challenger, accuracy, record, run_id)
    name = saved.keras_path.name
    if not deploy_it:
        _record(settings, saved, accuracy, "candidate", {**record, "dry_run": True})
        return Outcome(saved.version, "candidate", name, mlflow_version)
    if verdict.promote:
        pointer = deploy(settings, saved, accuracy, record, mlflow_version, verdict.reasons)
        return Outcome(saved.version, "deployed", name, mlflow_version, pointer)
    reject(settings, saved, accuracy, record, mlflow_version, verdict.reasons)
    return Outcome(saved.version, "rejected", name, mlflow_version)


def reconcile(settings: Settings) -> list[str]:
    """Make the store's record agree with the deployed pointer after an interrupted cycle.

    Run while holding the cycle lock. The pointer (``latest.json``) is the truth:
    its version is recorded ``deployed``; any other ``candidate`` was left by a
    cycle that died before deciding, and is recorded ``rejected``. Half-written
    model files (``.*.partial*``) are removed, and so are the ``latest.keras`` and
    ``latest.tflite`` copies older versions wrote (stale from now on).

    Returns:
        What was changed, one line each (empty when all agreed).
    """
    changes = []
    models_dir = Path(settings.models_dir)
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
    try:
        deployed = deployed_model(models_dir).version
    except ModelFileError:
        deployed = None
    with Store(settings.store_location) as store:
        for row in store.model_versions():
            if row["version"] == deployed and row["status"] != "deployed":
                store.record_model_version(
                    row["version"],
                    row["file"],
                    row["holdout_accuracy"],
                    "deployed",
                    {
                        **row["details"],
                        "reconciled": f"deployed but recorded {row['status']} (cycle interrupted after deployment)",
                    },
                )
                changes.append(f"{row['version']}: recorded as deployed (the pointer says so)")
            elif row["version"] != deployed and row["status"] == "candidate" and not row["details"].get("dry_run"):
                store.record_model_version(
                    row["version"],
                    row["file"],
                    row["holdout_accuracy"],
                    "rejected",
                    {**row["details"], "reconciled": "cycle interrupted before promotion"},
                )
                changes.append(f"{row['version']}: candidate left by an interrupted cycle, recorded as rejected")
    return changes
