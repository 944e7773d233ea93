"""Every label trains, the gate stays honest: judging on the fresh labels, and pseudo-labels.

The champion was trained with the labels up to its ``through_label_id``; the labels given since
(``fresh``) are drawings it never saw. They are split into judging folds by a hash of the
prediction id. For each fold, a model of the challenger's recipe (same parameters, same start,
same data) is trained on everything except that fold and reads it: the out-of-fold answers are
the challenger's score on the fresh drawings, set against the champion's on the same drawings.
Neither side is judged on a drawing it trained on. The model deployed is then fitted on every
label (the final fit), so no label is kept from training for ever: the cross-fit judges the
recipe, and the final fit is that recipe with more data. That is one training per fold more.
Averaging the fold models' weights instead of the final fit (``MNIST_HITL_AVERAGE_FOLDS``) saves
that last training: the folds all start from the champion, and each trained on every label but
its own fold's, so their average has seen every label.

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
from mnist_hitl.workbench.suspects import Suspect, record_judged_suspects, suspects_among


@dataclass
class CrossFit:
    """The recipe's out-of-fold answers on the fresh drawings (-1 where none was made), and their
    probabilities when the models were read for them (NaN rows where none was made)."""

    predicted: np.ndarray
    folds: np.ndarray
    seconds: list[float] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    models: list = field(default_factory=list)

    def as_json(self) -> dict:
        return {"folds": sorted({int(f) for f in self.folds}), "seconds": self.seconds}


def cross_fit(
    data: RetrainData,
    fit: Callable[[np.ndarray, np.ndarray], object],
    predict: Callable[[object, np.ndarray], object],
    keep_models: bool = False,
) -> CrossFit:
    """Train the recipe once per judging fold without it, and read that fold.

    Args:
        data: the split data (its fresh drawings are judged).
        fit: ``fit(x, y)`` trains a model of the challenger's recipe.
        predict: ``predict(model, x)`` gives the digits it reads, or its probabilities (n, 10).
        keep_models: keep the fold models (``CrossFit.models``), to average them.
    """
    fresh, folds = data.users_fresh, data.folds
    predicted = np.full(len(fresh), -1, dtype=np.int64)
    probabilities = None
    seconds, models = [], []
    for fold in sorted(set(folds.tolist())):
        start = time.perf_counter()
        model = fit(*data.training_set(leave_out_fold=fold))
        if keep_models:
            models.append(model)
        judged = folds == fold
        answers = np.asarray(predict(model, fresh.x[judged]))
        if answers.ndim == 2:
            if probabilities is None:
                probabilities = np.full((len(fresh), answers.shape[1]), np.nan)
            probabilities[judged] = answers
            answers = answers.argmax(axis=1)
        predicted[judged] = answers.astype(np.int64)
        seconds.append(round(time.perf_counter() - start, 2))
    return CrossFit(predicted, folds, seconds, probabilities, models)


def judge(
    data: RetrainData,
    fit: Callable[[np.ndarray, np.ndarray], object],
    read: Callable[[object, np.ndarray], object],
    final_fit: bool,
    average: Callable[[list], object] | None = None,
) -> tuple[object, np.ndarray | None, dict]:
    """Train the challenger and the answers it is judged by: ``(challenger, its answers or None, what was done)``.

    Args:
        read: ``read(model, x)``, the digits a model reads, or its probabilities (then the answers are
            probabilities too, and the judging has the log-loss and the suspect labels have them).
        final_fit: True: the cross-fit over every fold, then the challenger fitted on every label
            (its answers on the fresh drawings are the out-of-fold ones). False: one training
            without the first fold of the fresh labels; the challenger reads that fold itself
            (``None``: :func:`~mnist_hitl.learning.retrain.promotion.compare` asks it), the others train it.
        average: with ``final_fit``, ``average(models)`` makes the challenger from the fold models instead of a
            final fit (one training less; with fewer than two folds the final fit is made); None: the final fit.
    """
    start = time.perf_counter()
    if final_fit:
        averaged = average is not None and len(set(data.folds.tolist())) > 1
        judged = cross_fit(data, fit, read, keep_models=averaged)
        challenger = average(judged.models) if averaged else fit(*data.training_set())
        then = "the fold models' weights averaged" if averaged else "a final fit on every label"
        done = {"judging": f"cross-fit, then {then}", **judged.as_json()}
        answers = judged.predicted if judged.probabilities is None else judged.probabilities
        return challenger, answers, {**done, "seconds": round(time.perf_counter() - start, 2)}
    data.judged_fold = 0
    challenger = fit(*data.training_set(leave_out_fold=0))
    done = {"judging": "one fold of the fresh labels left out, the challenger trained once", "folds": [0]}
    return challenger, None, {**done, "seconds": round(time.perf_counter() - start, 2)}


def out_of_fold_probabilities(data: RetrainData, challenger, champion, answers: np.ndarray | None) -> np.ndarray:
    """Probabilities (n, 10) for every fresh label from a model that did not train on it: what confident
    learning needs to find the suspect labels (:mod:`mnist_hitl.workbench.suspects`).

    The cross-fit's own, when :func:`judge` made them (``final_fit`` with probabilities); otherwise, on
    the fold the challenger left out, the challenger's, and elsewhere the champion's (it was trained
    before any fresh label was given).

    Args:
        data: the split data (rows in the order of ``data.users_fresh``).
        challenger, champion: Keras models.
        answers: what :func:`judge` returned as the challenger's answers.
    """
    from mnist_hitl.learning.retrain.network import predict_proba

    fresh = data.users_fresh
    if answers is not None and np.ndim(answers) == 2 and not np.isnan(answers).any():
        return np.asarray(answers, dtype=np.float64)
    probabilities = np.array(predict_proba(champion, fresh.x), dtype=np.float64)
    if data.judged_fold is not None and len(fresh):
        left_out = data.folds == data.judged_fold
        probabilities[left_out] = predict_proba(challenger, fresh.x[left_out])
    return probabilities


def suspect_labels(
    store: Store, data: RetrainData, probabilities: np.ndarray, cycle_id: str | None, record: bool
) -> list[Suspect]:
    """The fresh labels confident learning flags (:mod:`mnist_hitl.workbench.suspects`), the most likely
    wrong first; stored for the ``suspect`` review strategy when ``record`` (a cycle's run, not a dry run).

    Args:
        probabilities: :func:`out_of_fold_probabilities`, rows in the order of ``data.users_fresh``.
        cycle_id: the cycle that judged them (named in each suspect's reason).
    """
    fresh = data.users_fresh
    origin = f"from the out-of-fold probabilities of cycle {cycle_id}'s judging ({len(fresh)} fresh labels judged)"
    if record:
        return record_judged_suspects(store, fresh.label_ids, probabilities, cycle_id or "", origin)
    by_id = {label.id: label for label in store.current_labels().values()}
    keep = [i for i, label_id in enumerate(fresh.label_ids) if int(label_id) in by_id]
    return suspects_among([by_id[int(fresh.label_ids[i])] for i in keep], np.asarray(probabilities)[keep])


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
