"""The MLflow model registry as the deployed model's source: its names, its client, whether it answers.

The learning half registers every challenger under these names and tags
(:mod:`mnist_hitl.learning.tracking`); a serving node with no shared disk reads them back
(:mod:`mnist_hitl.model.follow`). Both import them from here, so the serving half never
imports the learning half. MLflow is imported inside the functions: it is slow to import and a
predictor never needs it.
"""

from __future__ import annotations

import logging

from mnist_hitl import config
from mnist_hitl.config import Settings

EXPERIMENT = "mnist-hitl"
REGISTERED_MODEL = "mnist-hitl-cnn"
CHAMPION = "champion"
KIND_TAG = "mnist_hitl.kind"  # cycle | monitor | retrain
CYCLE_TAG = "mnist_hitl.cycle_id"
VERSION_TAG = "mnist_hitl.version"
NOTE_TAG = "mlflow.note.content"  # the run's description, shown by the MLflow UI
# The LiteRT export of a registered version: run artifact ``litert/<file>``, its SHA-256, its holdout accuracy.
LITERT_ARTIFACTS = "litert"
LITERT_FILE_TAG = "mnist_hitl.litert_file"
LITERT_SHA256_TAG = "mnist_hitl.litert_sha256"
# Its ``.keras`` file, as saved (the champion a retraining starts from): run artifact ``keras/<file>``, its SHA-256.
KERAS_ARTIFACTS = "keras"
KERAS_FILE_TAG = "mnist_hitl.keras_file"
KERAS_SHA256_TAG = "mnist_hitl.keras_sha256"
ACCURACY_TAG = "mnist_hitl.holdout_accuracy"

log = logging.getLogger(__name__)


def quiet() -> None:
    config.export("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false", keep_existing=True)
    config.export("MLFLOW_DISABLE_TELEMETRY", "true", keep_existing=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def embedded(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def client(settings: Settings):
    """An MlflowClient on the configured tracking (and registry) URI."""
    quiet()
    from mlflow import MlflowClient

    if embedded(settings.tracking_uri):
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def reachable(settings: Settings, timeout: float = 3.0) -> bool:
    """Whether the tracking server answers (always True for the embedded SQLite or file store).

    The MLflow client retries an unanswered HTTP call for minutes; asking first keeps a
    training that records itself from waiting on a server that is down.
    """
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return True
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False
