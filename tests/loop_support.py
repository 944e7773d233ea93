"""Helpers for the learning loop's tests: a quick first model and users who draw and label."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings, get_settings

QUICK_EPOCHS = 2
# The retraining of the end-to-end cycles: one tiny search, two epochs of fine-tuning.
TINY_RETRAIN = {"MNIST_HITL_TRIALS": "2", "MNIST_HITL_EPOCHS_PER_TRIAL": "1", "MNIST_HITL_FINAL_EPOCHS": "2"}
PLAIN = {"thicken": (0, 0), "rotate": (0.0, 0.0), "shear": (0.0, 0.0), "elastic": 0.0, "size": (150, 220)}


def quick_models(base: Path) -> Path:
    """A models folder with a deployed model trained for two epochs (about 97% on the MNIST holdout).

    Trained once per test session (the folder is reused). A challenger fine-tuned from it
    for two more epochs is reliably no worse on MNIST, so the end-to-end tests judge the
    loop rather than the noise of a 1,000-digit holdout around a 98.9% champion.
    """
    models = base / "quick-models"
    if (models / "latest.json").exists():
        return models
    home = base / "quick-home"
    from mnist_hitl.learning.training import train_first_model

    train_first_model(get_settings().replace(home=home), epochs=QUICK_EPOCHS, progress=False)
    shutil.copytree(home / "models", models)
    return models


def install_models(settings: Settings, models: Path) -> None:
    """Copy a models folder into a home and record its deployed model in the store."""
    import json

    from mnist_hitl.store import Store

    shutil.copytree(models, settings.models_dir)
    pointer = json.loads((settings.models_dir / "latest.json").read_text())
    with Store(settings.db_path) as store:
        store.record_model_version(pointer["version"], pointer["keras"], pointer["holdout_accuracy"], "deployed",
                                   {"reason": "first model"})


def draw_and_label(settings: Settings, count: int, seed: int = 0, styled: bool = True,
                   wrong_labels: bool = False, offset: int = 0) -> dict:
    """Users draw ``count`` digits in the app's way and label them.

    Args:
        settings: the home (with a deployed model).
        count: how many drawings.
        seed: which MNIST train digits and how they are redrawn.
        styled: drawn in :func:`mnist_hitl.learning.synthetic.shifted_style`'s style (else plain, MNIST-like).
        wrong_labels: every label is the next digit (``(true + 1) % 10``): a user who mislabels.
        offset: skip this many digits of the seeded order (for a second batch).

    Returns:
        Counts of corrections and confirmations, and the predictions' model versions.
    """
    from mnist_hitl.learning import synthetic
    from mnist_hitl.data import load_bundled
    from mnist_hitl.workbench import Workbench

    data = load_bundled()
    order = np.random.default_rng(seed).permutation(len(data.y_train))[offset : offset + count]
    style = synthetic.Style() if styled else synthetic.Style(**PLAIN)
    pictures = synthetic.shifted_style(data.x_train[order], seed=seed, style=style)
    truth = data.y_train[order]
    labels = (truth + 1) % 10 if wrong_labels else truth
    counts = {"corrections": 0, "confirmations": 0, "versions": set()}
    with Workbench(settings, source="test") as bench:
        for picture, label in zip(pictures, labels):
            result = bench.predict_picture(picture)
            kind = "confirm" if result.predicted_label == int(label) else "correct"
            bench.label(result.prediction_id, int(label), kind)
            counts["corrections" if kind == "correct" else "confirmations"] += 1
            counts["versions"].add(result.model_version)
    return counts


def run_cli(settings: Settings, *args: str, extra_env: dict | None = None, timeout: float = 600):
    """Run ``mnist-hitl`` in a subprocess on this home; returns the CompletedProcess."""
    env = {**os.environ, "MNIST_HITL_HOME": str(settings.home), **TINY_RETRAIN, **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [str(Path(sys.executable).parent / "mnist-hitl"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
