"""Every label trains, the gate stays honest: judging on the fresh labels, and pseudo-labels.

The champion was trained with the labels up to its ``through_label_id``; the labels given since
(``fresh``) are drawings it never saw. They are split into judging folds by a hash of the
prediction id. For each fold, a model of the challenger's recipe (same parameters, same start,
same data) is trained on everything except that fold and reads it: the out-of-fold answers are
the challenger's score on the fresh drawings, set against the champion's on the same drawings.
Neither side is judged on a drawing it trained on. The model deployed is then fitted on every
label (the final fit), so no label is kept from training for ever: the cross-fit judges the
recipe, and the final fit is that recipe with more data. That is one training per fold more.

The quick way (``final_fit=False``, :func:`judge`) trains once: the challenger leaves out one
fold of the fresh labels, is judged on it against the champion, and is what gets deployed. The
fold it left out is not lost: those labels are older than the new champion's
``through_label_id``, so the next retraining trains on them.

Pseudo-labels are unlabelled drawings the champion reads with at least a given confidence,
labelled with its answer. They join every training set once (people's labels are repeated
``oversample`` times), and never a judging fold: the folds are made of people's labels only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mnist_hitl.learning.retrain.labels import RetrainData, UserLabels, unlabelled_pictures
from mnist_hitl.store import Store


@dataclass
class CrossFit:
    """The recipe's out-of-fold answers on the fresh drawings (-1 where none was made)."""

    predicted: np.ndarray
    folds: np.ndarray
    seconds: list[float] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"folds": sorted({int(f) for f in self.folds}), "seconds": self.seconds}


def cross_fit(
    data: RetrainData, fit: Callable[[np.ndarray, np.ndarray], object], predict: Callable[[object, np.ndarray], object]
) -> CrossFit:
    """Train the recipe once per judging fold without it, and read that fold.

    Args:
        data: the split data (its fresh drawings are judged).
        fit: ``fit(x, y)`` trains a model of the challenger's recipe.
        predict: ``predict(model, x)`` gives the digits it reads.
    """
    fresh, folds = data.users_fresh, data.folds
    predicted = np.full(len(fresh), -1, dtype=np.int64)
    seconds = []
    for fold in sorted(set(folds.tolist())):
        start = time.perf_counter()
        model = fit(*data.training_set(leave_out_fold=fold))
        judged = folds == fold
        predicted[judged] = np.asarray(predict(model, fresh.x[judged]), dtype=np.int64)
        seconds.append(round(time.perf_counter() - start, 2))
    return CrossFit(predicted, folds, seconds)


def judge(
    data: RetrainData,
    fit: Callable[[np.ndarray, np.ndarray], object],
    read: Callable[[object, np.ndarray], object],
    final_fit: bool,
) -> tuple[object, np.ndarray | None, dict]:
    """Train the challenger and the answers it is judged by: ``(challenger, its answers or None, what was done)``.

    Args:
        final_fit: True: the cross-fit over every fold, then the challenger fitted on every label
            (its answers on the fresh drawings are the out-of-fold ones). False: one training
            without the first fold of the fresh labels; the challenger reads that fold itself
            (``None``: :func:`~mnist_hitl.learning.retrain.promotion.compare` asks it), the others train it.
    """
    start = time.perf_counter()
    if final_fit:
        judged = cross_fit(data, fit, read)
        challenger = fit(*data.training_set())
        done = {"judging": "cross-fit, then a final fit on every label", **judged.as_json()}
        return challenger, judged.predicted, {**done, "seconds": round(time.perf_counter() - start, 2)}
    data.judged_fold = 0
    challenger = fit(*data.training_set(leave_out_fold=0))
    done = {"judging": "one fold of the fresh labels left out, the challenger trained once", "folds": [0]}
    return challenger, None, {**done, "seconds": round(time.perf_counter() - start, 2)}


def pseudo_labels(
    store: Store, read: Callable[[np.ndarray], np.ndarray], confidence: float, limit: int = 2000
) -> UserLabels | None:
    """Unlabelled drawings the champion reads with at least ``confidence``, labelled with its answer.

    Args:
        store: the store (only predictions nobody labelled are taken, the newest ``limit``).
        read: the champion's probabilities for pictures (n, 28, 28) -> (n, 10).
        confidence: 0 (or less) turns pseudo-labels off: None.
    """
    if confidence <= 0:
        return None
    pictures, ids = unlabelled_pictures(store, limit)
    if not len(ids):
        return None
    probabilities = np.asarray(read(pictures))
    sure = probabilities.max(axis=1) >= confidence
    digits = probabilities.argmax(axis=1)[sure].astype(np.int64)
    return UserLabels(pictures[sure], digits, ids[sure], np.zeros(len(digits), dtype=np.int64), digits)


def champion_pseudo_labels(store: Store, champion, confidence: float) -> UserLabels | None:
    """:func:`pseudo_labels` from the store, read by the champion (a Keras model)."""
    from mnist_hitl.learning.retrain.network import predict_proba

    return pseudo_labels(store, lambda pictures: predict_proba(champion, pictures), confidence)
