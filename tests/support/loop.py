"""What the learning loop's tests share: a home with a given model, and users who draw and label.

The quickly trained first model they start from is the ``quick_models`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings

# The retraining of the end-to-end cycles: one tiny search, one training of two epochs of fine-tuning (the quick
# judging; the default cross-fit and final fit run in the retrain notebook's test and in test_crossfit.py).
TINY_RETRAIN = {
    "MNIST_HITL_TRIALS": "2",
    "MNIST_HITL_EPOCHS_PER_TRIAL": "1",
    "MNIST_HITL_FINAL_EPOCHS": "2",
    "MNIST_HITL_FINAL_FIT": "false",
}
PLAIN = {"thicken": (0, 0), "rotate": (0.0, 0.0), "shear": (0.0, 0.0), "elastic": 0.0, "size": (150, 220)}


def install_models(settings: Settings, models: Path) -> None:
    """Copy a models folder into a home and record its deployed model in the store."""
    import json

    from mnist_hitl.store import Store

    shutil.copytree(models, settings.models_dir)
    pointer = json.loads((settings.models_dir / "latest.json").read_text())
    with Store(settings.db_path) as store:
        store.record_model_version(
            pointer["version"], pointer["keras"], pointer["holdout_accuracy"], "deployed", {"reason": "first model"}
        )


def draw_and_label(
    settings: Settings,
    count: int,
    seed: int = 0,
    styled: bool = True,
    wrong_labels: bool = False,
    offset: int = 0,
    workbench=None,
) -> dict:
    """Users draw ``count`` digits in the app's way and label them.

    Args:
        settings: the home (with a deployed model).
        count: how many drawings.
        seed: which MNIST train digits and how they are redrawn.
        styled: drawn in :func:`mnist_hitl.learning.synthetic.shifted_style`'s style (else plain, MNIST-like).
        wrong_labels: every label is the next digit (``(true + 1) % 10``): a user who mislabels.
        offset: skip this many digits of the seeded order (for a second batch).
        workbench: a running app's :class:`~mnist_hitl.workbench.workbench.Workbench` to draw in (left open);
            default: one of its own on ``settings``.

    Returns:
        Counts of corrections and confirmations, and the predictions' model versions.
    """
    from mnist_hitl.learning import synthetic
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.workbench import Workbench

    data = load_bundled()
    order = np.random.default_rng(seed).permutation(len(data.y_train))[offset : offset + count]
    style = synthetic.Style() if styled else synthetic.Style(**PLAIN)
    pictures = synthetic.shifted_style(data.x_train[order], seed=seed, style=style)
    truth = data.y_train[order]
    labels = (truth + 1) % 10 if wrong_labels else truth
    counts = {"corrections": 0, "confirmations": 0, "versions": set()}
    with contextlib.nullcontext(workbench) if workbench is not None else Workbench(settings, source="test") as bench:
        for picture, label in zip(pictures, labels):
            result = bench.predict_picture(picture)
            kind = "confirm" if result.predicted_label == int(label) else "correct"
            bench.label(result.prediction_id, int(label), kind)
            counts["corrections" if kind == "correct" else "confirmations"] += 1
            counts["versions"].add(result.model_version)
    return counts
