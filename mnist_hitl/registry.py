"""Model versions: train the first model, deploy, and keep the store's record.

The store's ``model_versions`` table and ``models/latest.json`` agree: every
deployment writes the files first, then the pointer, then the record.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from mnist_hitl.config import Settings, get_settings
from mnist_hitl.predictor import ModelFileError, deployed_model
from mnist_hitl.store import Store

log = logging.getLogger(__name__)


def has_deployed_model(settings: Settings | None = None) -> bool:
    """True when a usable deployed model exists (pointer and export both present)."""
    settings = settings or get_settings()
    try:
        return deployed_model(settings.models_dir).tflite_path.is_file()
    except ModelFileError:
        return False


def train_first_model(settings: Settings | None = None, force: bool = False, epochs: int | None = None,
                      progress: bool = True) -> dict:
    """Train, evaluate and deploy a model on MNIST, unless one is deployed already.

    Args:
        settings: defaults to the environment's settings.
        force: retrain and redeploy even if a model is deployed.
        epochs: overrides ``MNIST_HITL_EPOCHS``.
        progress: show a progress bar while training.

    Returns:
        ``{"trained": bool, "model_version": ..., "holdout_accuracy": ..., "train_seconds": ...}``.
    """
    settings = settings or get_settings()
    if not force and has_deployed_model(settings):
        deployed = deployed_model(settings.models_dir)
        return {"trained": False, "model_version": deployed.version, "holdout_accuracy": deployed.holdout_accuracy}

    from mnist_hitl import model as model_lib
    from mnist_hitl.data import load_mnist

    dataset = load_mnist(settings)
    params = model_lib.TrainParams(epochs=epochs or settings.train_epochs, seed=settings.seed)
    trained, seconds = model_lib.timed(
        model_lib.train_model, dataset.x_train, dataset.y_train, params, progress=progress,
        description=f"training on {len(dataset.y_train)} {dataset.source} digits",
    )
    accuracy = model_lib.evaluate(trained, dataset.x_test, dataset.y_test)
    saved = model_lib.save_model(trained, settings.models_dir)
    model_lib.deploy(saved, settings.models_dir, holdout_accuracy=accuracy)
    with Store(settings.db_path) as store:
        store.record_model_version(
            saved.version, saved.keras_path.name, accuracy, status="deployed",
            details={"params": asdict(params), "data": dataset.source, "train_seconds": round(seconds, 1),
                     "reason": "first model" if not force else "forced retrain"},
        )
    log.info("deployed %s (holdout accuracy %.4f)", saved.version, accuracy)
    return {"trained": True, "model_version": saved.version, "holdout_accuracy": accuracy,
            "train_seconds": round(seconds, 1)}
