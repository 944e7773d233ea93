"""Second opinions: a labelled drawing shown to a different reviewer, without the first answer.

One reviewer's label trains the model and judges it. So every label the deployed model doubts
(it reads another digit at ``MNIST_HITL_DOUBT_CONFIDENCE`` or more), and a share of the rest
(``MNIST_HITL_SECOND_OPINION_SHARE``, drawn by a fixed hash of the prediction id and the seed, so a
drawing stays drawn), goes to one more reviewer: anyone but those who labelled it, until a second
named reviewer has. The item carries the deployed model's scores and no label, so the second
reviewer answers blind; their answer is a label like any other, and the two are compared by
:mod:`mnist_hitl.workbench.agreement`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.store import UNKNOWN_REVIEWER, Store
from mnist_hitl.workbench.agreement import reviewers_labels
from mnist_hitl.workbench.ranking import QueueItem, ScoreCache, doubtful, labelled_scores, random_rank

_HASH_RANGE = 2.0**64


def needing_a_second_opinion(
    held: Mapping[int, Mapping[str, int]], doubted: Collection[int], share: float, seed: int, reviewer: str
) -> list[int]:
    """The drawings ``reviewer`` may give a second opinion on: the doubted ones first (in the order given),
    then those drawn by the share, by id.

    Args:
        held: by prediction id, each reviewer's label that holds now (:func:`reviewers_labels`).
        doubted: prediction ids whose label the deployed model doubts, surest doubt first.
        share: the share of the other labelled drawings drawn for a second opinion (0-1).
        reviewer: who asks; never given a drawing they labelled.
    """
    open_ = {
        pid
        for pid, given in held.items()
        if reviewer not in given and len([name for name in given if name != UNKNOWN_REVIEWER]) < 2
    }
    ids = np.array(sorted(open_), dtype=np.int64)
    drawn = ids if share >= 1 or not len(ids) else ids[random_rank(ids, seed).astype(np.float64) < share * _HASH_RANGE]
    first = [int(pid) for pid in doubted if pid in open_]
    return first + sorted(set(drawn.tolist()) - set(first))


def second_opinion_queue(
    store: Store, cache: ScoreCache, settings: Settings, limit: int, reviewer: str, exclude: Collection[int] = ()
) -> list[QueueItem]:
    """The drawings waiting for ``reviewer``'s second opinion, as queue items that show no label."""
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    version, ids, probabilities = cache.current()
    scores = labelled_scores(store.current_labels(), ids, probabilities)
    doubted = [row["prediction_id"] for row in doubtful(scores, settings.doubt_confidence, version)]
    held = reviewers_labels(store.labels())
    chosen = needing_a_second_opinion(held, doubted, settings.second_opinion_share, settings.seed, reviewer)
    excluded = {int(i) for i in exclude}
    chosen = [pid for pid in chosen if pid not in excluded][:limit]
    by_id = dict(zip((label.prediction_id for label in scores.labels), scores.probabilities, strict=True))
    pictures = store.pictures(chosen)
    doubted_ids = set(doubted)
    return [
        QueueItem(
            pid,
            int(np.argmax(by_id[pid])),
            [float(p) for p in by_id[pid]],
            1.0 - float(np.max(by_id[pid])),
            version,
            pictures[pid][1],
            pictures[pid][0],
            random=pid not in doubted_ids,
            reason="a second opinion: the model doubts the label given"
            if pid in doubted_ids
            else "a second opinion: drawn at random (MNIST_HITL_SECOND_OPINION_SHARE)",
        )
        for pid in chosen
        if pid in by_id and pid in pictures
    ]
