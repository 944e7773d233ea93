"""Suspect labels: the people's labels most likely wrong, found by confident learning, each with why.

A wrong label trains the model and judges it, and the doubtful strategy only sees the ones the
model contradicts at 95%. Confident learning (Northcutt et al., ``cleanlab.filter.find_label_issues``)
estimates, per digit, how sure a model is of the drawings really of that digit, and flags a label
whose drawing the model gives to another digit more surely than that; the flagged ones are ranked
by the probability of their own label (self-confidence), lowest first.

It needs probabilities from a model that did not train on the label it judges: out-of-fold
probabilities (each label scored by a model trained without it). The learning cycle has them from
its judging folds and stores its list (:func:`record_suspects`); until one is stored, the queue
computes a list from the deployed model's scores of the labelled drawings and says so in each
``reason``: that model trained on most of those labels, so it flags fewer of them.

A stored suspect's label neither trains nor judges the next retraining until someone has looked
at the drawing again (:func:`unreviewed_suspects`): any later label, a confirmation of the same
digit included, clears it. The queue's answer is a label of kind ``adjudicate``
(:mod:`.adjudication`): the person sees the label given, who gave it and why it is suspect, so the
answer is an informed decision, not a second opinion, and a correction decides the drawing instead
of opening a dispute with the label it corrects.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from mnist_hitl.clock import utc_now
from mnist_hitl.store import Label, Store
from mnist_hitl.workbench.ranking import QueueItem, ScoreCache, labelled_scores

SUSPECTS_KEY = "suspect_labels"  # the store's meta key of the latest list the cycle stored


@dataclass(frozen=True)
class Suspect:
    """A label confident learning flags: what was given, and what the model believes instead."""

    prediction_id: int
    label_id: int
    label: int  # the digit given
    reviewer: str
    model_label: int  # the digit the model believes
    model_probability: float  # the model's probability of that digit
    label_probability: float  # the model's probability of the digit given
    probabilities: list[float]
    looked_again: bool = False  # flagged again after someone labelled the drawing since an earlier flag

    def reason(self, origin: str) -> str:
        return (
            f"labelled {self.label} by {self.reviewer} (label {self.label_id}); the model believes"
            f" {self.model_label} at {self.model_probability:.3f} and gives {self.label} {self.label_probability:.3f};"
            f" {origin}"
        )


def find_suspects(labels: Sequence[int], probabilities: np.ndarray) -> np.ndarray:
    """Positions of the labels confident learning flags, the most likely wrong first.

    Args:
        labels: the digit given to each drawing.
        probabilities: (n, 10), each row from a model that did not train on that drawing's label.
    """
    from cleanlab.filter import find_label_issues  # pandas and scikit-learn: only when asked

    given = np.asarray(labels, dtype=np.int64)
    p = _checked(given, probabilities)
    if len(np.unique(given)) < 2:  # one digit alone: nothing to compare it with
        return np.zeros(0, dtype=np.int64)
    return np.asarray(find_label_issues(given, p, return_indices_ranked_by="self_confidence", n_jobs=1), dtype=np.int64)


def suspect_ranking(labels: Sequence[int], probabilities: np.ndarray) -> np.ndarray:
    """Every position, the flagged ones first (as :func:`find_suspects` ranks them), then the rest by
    cleanlab's label quality score, lowest first: a queue that goes on past the flagged labels."""
    from cleanlab.rank import get_label_quality_scores

    given = np.asarray(labels, dtype=np.int64)
    flagged = find_suspects(given, probabilities)
    quality = get_label_quality_scores(given, _checked(given, probabilities), method="self_confidence")
    order = np.argsort(quality, kind="stable")
    return np.concatenate([flagged, order[~np.isin(order, flagged)]])


def _checked(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(labels), 10):
        raise ValueError(f"expected probabilities of shape ({len(labels)}, 10), got {p.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("labels are digits 0-9")
    return p / p.sum(axis=1, keepdims=True)


def suspects_among(labels: Sequence[Label], probabilities: np.ndarray) -> list[Suspect]:
    """The flagged ones among people's latest labels, the most likely wrong first.

    Args:
        labels: the labels judged (digits, no undos).
        probabilities: (n, 10), rows in the order of ``labels``.
    """
    given = [label.label for label in labels]
    p = np.asarray(probabilities, dtype=np.float64).reshape(len(labels), 10)
    suspects = []
    for i in find_suspects(given, p):
        label, believed = labels[i], int(np.argmax(p[i]))
        suspects.append(
            Suspect(
                label.prediction_id,
                label.id,
                int(label.label),
                label.reviewer,
                believed,
                round(float(p[i, believed]), 6),
                round(float(p[i, label.label]), 6),
                [round(float(x), 6) for x in p[i]],
            )
        )
    return suspects


def record_suspects(store: Store, suspects: Sequence[Suspect], model_version: str, origin: str) -> None:
    """Store the latest list (the cycle's, from its out-of-fold probabilities), replacing the one before.

    Args:
        model_version: what scored them (the challenger's version, or the cycle's id).
        origin: how the probabilities were made, shown in each item's ``reason``.
    """
    record = {
        "computed_at": utc_now("microseconds"),
        "model_version": model_version,
        "origin": origin,
        "suspects": [asdict(suspect) for suspect in suspects],
    }
    store.set_meta(SUSPECTS_KEY, json.dumps(record))


def record_judged_suspects(
    store: Store, label_ids: Sequence[int], probabilities: np.ndarray, model_version: str, origin: str
) -> list[Suspect]:
    """Find the suspects among the labels a cycle judged and store them, keeping the stored ones it did not judge.

    A cycle judges only the labels given since the deployed model was trained, so a suspect found by
    an earlier cycle stays listed until its drawing is labelled again (the queue then drops it) or a
    later cycle judges it anew. A label given since ``label_ids`` were read is not judged: someone
    has looked again. A label given after an earlier flag of its drawing and flagged anew is marked
    ``looked_again``: listed for the queue, but no retraining sets it aside again.

    Args:
        label_ids: the ids of the labels judged.
        probabilities: (n, 10), rows in the order of ``label_ids``, each from a model that did not train on it.
        model_version: what scored them; origin: how (shown in each item's ``reason``).

    Returns:
        The new suspects, the most likely wrong first.
    """
    wanted = {int(i) for i in label_ids}
    current = {label.id: label for label in store.current_labels().values() if label.id in wanted}
    keep = [i for i, label_id in enumerate(label_ids) if int(label_id) in current]
    judged = [current[int(label_ids[i])] for i in keep]
    found = suspects_among(judged, np.asarray(probabilities, dtype=np.float64).reshape(-1, 10)[keep]) if judged else []
    judged_drawings = {label.prediction_id for label in judged}
    before = stored_suspects(store)
    earlier = {old.prediction_id: old.label_id for old in (before[0] if before else [])}
    again = {s.prediction_id for s in found if earlier.get(s.prediction_id, s.label_id) < s.label_id}
    found = [replace(s, looked_again=True) if s.prediction_id in again else s for s in found]
    kept = [old for old in (before[0] if before else []) if old.prediction_id not in judged_drawings]
    record_suspects(store, [*found, *kept], model_version, origin)
    return found


def stored_suspects(store: Store) -> tuple[list[Suspect], str, str] | None:
    """The latest stored list: (suspects, the version that scored them, its origin); None if none is stored."""
    raw = store.get_meta(SUSPECTS_KEY)
    if raw is None:
        return None
    record = json.loads(raw)
    origin = f"{record['origin']}, computed {record['computed_at']}"
    return [Suspect(**row) for row in record["suspects"]], record["model_version"], origin


def unreviewed_suspects(suspects: Iterable[Suspect], history: Iterable[Label]) -> set[int]:
    """The drawings of the suspects nobody has looked at again: no label (of any kind, by anyone) was given to
    the drawing after the flagged one. A retraining sets their labels aside until someone does; a label given
    after an earlier flag and flagged again (``looked_again``) is not set aside twice.

    Args:
        suspects: a stored list (:func:`stored_suspects`).
        history: the labels to look in (a cycle's: those up to its newest label id); undos included.
    """
    newest: dict[int, int] = {}
    for label in history:
        newest[label.prediction_id] = max(newest.get(label.prediction_id, 0), label.id)
    return {
        suspect.prediction_id
        for suspect in suspects
        if not suspect.looked_again and newest.get(suspect.prediction_id) == suspect.label_id
    }


def suspect_queue(store: Store, cache: ScoreCache, limit: int, exclude: Collection[int] = ()) -> list[QueueItem]:
    """The suspect labels as queue items, the most likely wrong first, each with its ``reason``.

    A stored list is served without the labels given since it was made (someone looked again);
    with none stored, the deployed model's scores of the labelled drawings are judged now.
    """
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    current = store.current_labels()
    stored = stored_suspects(store)
    if stored is None:
        version, ids, probabilities = cache.current()
        scores = labelled_scores(current, ids, probabilities)
        suspects = suspects_among(scores.labels, scores.probabilities)
        origin = (
            f"from the deployed model {version}'s probabilities, computed now: no cycle has stored out-of-fold"
            " ones, and this model trained on most of these labels, so it flags fewer of them"
        )
    else:
        suspects, version, origin = stored
    excluded = {int(i) for i in exclude}
    still = [
        suspect
        for suspect in suspects
        if suspect.prediction_id not in excluded
        and (label := current.get(suspect.prediction_id)) is not None
        and label.id == suspect.label_id
    ][:limit]
    pictures = store.pictures([suspect.prediction_id for suspect in still])
    return [
        QueueItem(
            suspect.prediction_id,
            suspect.model_label,
            suspect.probabilities,
            1.0 - suspect.label_probability,
            version,
            pictures[suspect.prediction_id][1],
            pictures[suspect.prediction_id][0],
            reason=suspect.reason(origin),
        )
        for suspect in still
        if suspect.prediction_id in pictures
    ]
