"""Disputes and their adjudication: when reviewers give one drawing different digits, someone decides.

A drawing is disputed when the labels that hold now from two reviewers (each reviewer's latest,
not undone) give different digits, and no adjudication decided it after them. An adjudication is a
label of kind ``adjudicate``: it settles every label given before it, and a later label that
disagrees with it opens the dispute again. The answer to a suspect label is an adjudication too
(:mod:`~mnist_hitl.workbench.suspects`): whoever gives it has seen the label and why it is suspect.
Labels whose reviewer is ``unknown`` (given before labels named their reviewer, or by a client that
names none, such as the app) are no one person's, as for :mod:`~mnist_hitl.workbench.agreement`:
they dispute nothing, so one person labelling in the app and correcting from the CLI is not a
dispute (the latest label counts, as it always did).

Until a dispute is decided, the drawing neither trains nor judges a model
(:mod:`mnist_hitl.learning.retrain.labels`); the ``adjudicate`` queue serves the disputed drawings,
oldest dispute first, each with the competing labels and who gave them: the adjudicator decides
knowing the answers.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from mnist_hitl.store import ADJUDICATE, UNKNOWN_REVIEWER, Label, Store
from mnist_hitl.workbench.agreement import held_labels
from mnist_hitl.workbench.ranking import QueueItem, ScoreCache


def disputes(history: Iterable[Label]) -> dict[int, list[Label]]:
    """The disputed drawings, by prediction id, each with its competing labels, oldest first.

    The competing labels are the held ones of named reviewers given since the drawing's latest held
    adjudication (that adjudication first, whoever gave it), or all of them when none was decided.
    """
    found = {}
    for prediction_id, by_reviewer in held_labels(history).items():
        held = sorted(
            (label for label in by_reviewer.values() if label.reviewer != UNKNOWN_REVIEWER or label.kind == ADJUDICATE),
            key=lambda label: label.id,
        )
        decided = max((label.id for label in held if label.kind == ADJUDICATE), default=0)
        standing = [label for label in held if label.id >= decided]
        if len({label.label for label in standing}) > 1:
            found[prediction_id] = standing
    return found


def dispute_reason(competing: list[Label]) -> str:
    """What the adjudicator reads: each competing digit, who gave it and how."""
    answers = "; ".join(
        f"{label.label} by {label.reviewer} ({'decided' if label.kind == ADJUDICATE else label.kind}, label {label.id})"
        for label in competing
    )
    return f"disputed: {answers}; decide with a label of kind adjudicate"


def adjudication_queue(store: Store, cache: ScoreCache, limit: int, exclude: Collection[int] = ()) -> list[QueueItem]:
    """The disputed drawings, the oldest dispute first (by the competing label given last), as queue items
    whose ``reason`` lists the competing labels and their reviewers.

    Raises:
        ValueError: a negative limit.
    """
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    excluded = {int(i) for i in exclude}
    open_ = sorted(
        ((pid, competing) for pid, competing in disputes(store.labels()).items() if pid not in excluded),
        key=lambda item: (item[1][-1].id, item[0]),
    )
    version, ids, probabilities = cache.current()
    scored = {}
    for pid, competing in open_:
        if len(scored) == limit:
            break
        position = int(np.searchsorted(ids, pid))
        if position < len(ids) and ids[position] == pid and not np.isnan(probabilities[position]).any():
            scored[pid] = (competing, probabilities[position])
    pictures = store.pictures(list(scored))
    return [
        QueueItem(
            pid,
            int(np.argmax(p)),
            [float(x) for x in p],
            1.0 - float(np.max(p)),
            version,
            pictures[pid][1],
            pictures[pid][0],
            reason=dispute_reason(competing),
        )
        for pid, (competing, p) in scored.items()
        if pid in pictures
    ]
