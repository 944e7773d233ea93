"""The review queue: the unlabelled drawings the deployed model is least sure of, first.

Every stored prediction is scored again by the model deployed now, not the one that made it:
a new model is unsure of other drawings. Scores are cached per (prediction, model version),
in memory and in the store's ``scores`` table, so a process pays for a prediction once per
model and a new process reads the table instead of running the model. A prediction made by
the deployed model is not run again: its own probabilities are its scores. The rest are
scored in batches on the predictor's batch interpreter.

Uncertainty-first alone fills a queue with near-duplicates of one confusing drawing, and
never shows the model the drawings it is wrongly sure of; so a share of the queue
(``MNIST_HITL_QUEUE_RANDOM_SHARE``) is drawn at random from the rest of the pool, spread
evenly through it. The draw is a fixed hash of the prediction id and ``MNIST_HITL_SEED``:
the same store gives the same queue, and an item does not jump away between two calls.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.model import Predictor
from mnist_hitl.preprocess import decode_stored_png
from mnist_hitl.store import Label, Store

RANKED = ("margin", "entropy", "doubtful")  # the strategies :func:`review_queue` ranks
STRATEGIES = (*RANKED, "suspect", "second-opinion", "adjudicate")  # .suspects, .opinions, .adjudication
SCORING_CHUNK = 4096  # pictures decoded and scored at once: ~13 MB of float32


@dataclass(frozen=True)
class QueueItem:
    """One drawing to review, scored by the deployed model.

    ``uncertainty``: higher is less sure. Margin: 1 - (p1 - p2) of the two most probable
    digits; entropy: of the ten probabilities (nats); doubtful and suspect: 1 - the probability
    of the person's latest label; second-opinion: 1 - the top probability. ``reason``: why a suspect label
    is suspect, or why a drawing wants a second opinion.
    """

    prediction_id: int = field(metadata={"description": "the prediction's id", "examples": [1]})
    predicted_label: int = field(
        metadata={"description": "the digit the deployed model reads", "ge": 0, "le": 9, "examples": [3]}
    )
    probabilities: list[float] = field(
        metadata={"description": "the deployed model's probability of each digit", "min_length": 10, "max_length": 10}
    )
    uncertainty: float = field(
        metadata={
            "description": "how unsure the deployed model is, higher is less sure (margin: 1 - (p1 - p2);"
            " entropy: in nats; doubtful, suspect: 1 - the probability of the person's label)",
            "examples": [0.99],
        }
    )
    model_version: str = field(
        metadata={"description": "the deployed model's version, which scored it", "examples": ["20260101-120000-000"]}
    )
    source: str = field(
        metadata={"description": "who asked for the prediction: app, cli, api, import...", "examples": ["import"]}
    )
    png: bytes = field(repr=False, metadata={"description": "the stored 28x28 picture, as a PNG"})
    random: bool = field(  # drawn at random from the pool, not for its uncertainty
        default=False, metadata={"description": "drawn at random from the pool, not for its uncertainty"}
    )
    reason: str | None = field(
        default=None,
        metadata={
            "description": "suspect: the label given, what the model believes, where that came from;"
            " second-opinion: why it wants one"
        },
    )

    def as_json(self) -> dict:
        return {
            "prediction_id": self.prediction_id,
            "predicted_label": self.predicted_label,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "uncertainty": round(self.uncertainty, 6),
            "model_version": self.model_version,
            "source": self.source,
            "random": self.random,
            **({} if self.reason is None else {"reason": self.reason}),
        }


def uncertainty(probabilities: np.ndarray, strategy: str = "margin") -> np.ndarray:
    """How unsure the model is of each row of probabilities (higher: less sure)."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1, 10)
    if strategy == "margin":
        top = np.sort(p, axis=1)
        return 1.0 - (top[:, -1] - top[:, -2])
    if strategy == "entropy":
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    raise ValueError(f"strategy {strategy!r} is not one of margin, entropy")


def random_rank(ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random rank per prediction id (SplitMix64 of id and seed)."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def queue_order(
    uncertainties: np.ndarray, ids: np.ndarray, limit: int, random_share: float = 0.1, seed: int = 0
) -> list[tuple[int, bool]]:
    """Positions into the pool in queue order, each with whether it was drawn at random.

    The ``limit - round(limit * random_share)`` least sure first (ties: the older first); the
    random ones drawn from the rest of the pool and spread evenly between them.
    """
    order = np.lexsort((ids, -np.asarray(uncertainties)))
    drawn_count = min(math.floor(limit * random_share + 0.5), len(order))
    top = order[: min(limit - drawn_count, len(order))]
    rest = order[len(top) :]
    drawn = rest[np.argsort(random_rank(ids[rest], seed), kind="stable")[:drawn_count]]
    queue: list[tuple[int, bool]] = []
    taken = 0
    for j, position in enumerate(drawn):
        until = round((j + 1) * len(top) / (len(drawn) + 1))
        queue += [(int(i), False) for i in top[taken:until]]
        queue.append((int(position), True))
        taken = until
    return queue + [(int(i), False) for i in top[taken:]]


class ScoreCache:
    """The deployed model's probabilities for every stored prediction, kept up to date incrementally.

    Thread-safe; the arrays it returns are never changed afterwards. It reads and writes the
    ``scores`` table through the store it is given, the workbench's own: the store lends its
    connection to one caller at a time, so a scoring on one thread and a label written on
    another take turns for each statement, never for the whole scoring.

    Args:
        store: the store whose predictions are scored (not closed here: its owner closes it).
        predictor: the deployed model.
    """

    def __init__(self, store: Store, predictor: Predictor) -> None:
        self.store, self.predictor = store, predictor
        self._lock = threading.Lock()
        self._version: str | None = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._probabilities = np.zeros((0, 10), dtype=np.float32)

    def current(self) -> tuple[str, np.ndarray, np.ndarray]:
        """(the deployed version, prediction ids ascending, their probabilities (n, 10); NaN: unreadable)."""
        with self._lock:
            for _ in range(3):  # a deployment in the middle of scoring: start again with the new model
                version = self.predictor.version
                if version != self._version:
                    self._version, self._ids = version, np.zeros(0, dtype=np.int64)
                    self._probabilities = np.zeros((0, 10), dtype=np.float32)
                after = int(self._ids[-1]) if len(self._ids) else 0
                rows = self.store.cached_scores(version, after)
                try:
                    ids, probabilities = self._score(version, rows)
                except _Redeployed:
                    continue
                self._ids = np.concatenate([self._ids, ids])
                self._probabilities = np.concatenate([self._probabilities, probabilities])
                return version, self._ids, self._probabilities
            raise RuntimeError("the deployed model kept changing while the queue was scored; try again")

    def _score(self, version: str, rows: list) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        probabilities = np.full((len(rows), 10), np.nan, dtype=np.float32)
        cached = [i for i, row in enumerate(rows) if row[1] is not None]
        if cached:
            blob = b"".join(rows[i][1] for i in cached)
            probabilities[cached] = np.frombuffer(blob, dtype=np.float32).reshape(-1, 10)
        own = [i for i, row in enumerate(rows) if row[1] is None and row[2] is not None]
        if own:
            probabilities[own] = np.array([json.loads(rows[i][2]) for i in own], dtype=np.float32)
            self.store.save_scores(version, ((ids[i], probabilities[i].tobytes()) for i in own))
        missing = [i for i, row in enumerate(rows) if row[1] is None and row[2] is None]
        for start in range(0, len(missing), SCORING_CHUNK):
            chunk = missing[start : start + SCORING_CHUNK]
            pictures = self.store.pictures(ids[chunk].tolist())
            digits = np.stack([_digit(pictures.get(int(ids[i]), (b"", ""))[0]) for i in chunk])
            readable = ~np.isnan(digits[:, 0, 0])
            scored, used = self.predictor.predict_batch(digits[readable])
            if used != version:
                raise _Redeployed
            rows_scored = np.full((len(chunk), 10), np.nan, dtype=np.float32)
            rows_scored[readable] = scored
            probabilities[chunk] = rows_scored
            self.store.save_scores(version, ((ids[i], probabilities[i].tobytes()) for i in chunk))
        return ids, probabilities


class _Redeployed(Exception):
    pass


def _digit(png: bytes) -> np.ndarray:
    """A stored 28x28 picture as the model reads it, floats in [0, 1]; NaN where it is not one."""
    try:
        return decode_stored_png(png)
    except Exception:  # a row written by another program: left out of the queue, not fatal
        return np.full((28, 28), np.nan, dtype=np.float32)


@dataclass(frozen=True)
class LabelledScores:
    """The users' latest labels beside the deployed model's scores of the same drawings."""

    labels: list[Label]
    probabilities: np.ndarray  # (n, 10), rows in the order of ``labels``

    @property
    def person(self) -> np.ndarray:
        return np.array([label.label for label in self.labels], dtype=np.int64)

    @property
    def model(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=1) if len(self.labels) else np.zeros(0, dtype=np.int64)


def labelled_scores(labels: dict[int, Label], ids: np.ndarray, probabilities: np.ndarray) -> LabelledScores:
    """The scored predictions among ``labels`` (latest labels by prediction id)."""
    wanted = np.array(sorted(labels), dtype=np.int64)
    positions = np.searchsorted(ids, wanted).clip(0, max(len(ids) - 1, 0))
    found = (ids[positions] == wanted) if len(ids) else np.zeros(len(wanted), dtype=bool)
    rows = probabilities[positions[found]] if len(ids) else np.zeros((0, 10), dtype=np.float32)
    readable = ~np.isnan(rows).any(axis=1)
    kept = wanted[found][readable]
    return LabelledScores([labels[int(i)] for i in kept], rows[readable])


def doubtful(scores: LabelledScores, confidence: float, version: str) -> list[dict]:
    """The labels the model, at ``confidence`` or more, reads as another digit; the surest first."""
    model, person = scores.model, scores.person
    sure = scores.probabilities.max(axis=1) if len(person) else np.zeros(0)
    chosen = np.flatnonzero((model != person) & (sure >= confidence))
    chosen = chosen[np.lexsort(([scores.labels[i].prediction_id for i in chosen], -sure[chosen]))]
    return [
        {
            "prediction_id": scores.labels[i].prediction_id,
            "label_id": scores.labels[i].id,
            "label": int(person[i]),
            "kind": scores.labels[i].kind,
            "labelled_at": scores.labels[i].created_at,
            "model_label": int(model[i]),
            "model_confidence": round(float(sure[i]), 6),
            "label_probability": round(float(scores.probabilities[i, person[i]]), 6),
            "model_version": version,
        }
        for i in chosen
    ]


def review_queue(
    store: Store,
    cache: ScoreCache,
    settings: Settings,
    limit: int = 20,
    strategy: str = "margin",
    exclude: Collection[int] = (),
) -> list[QueueItem]:
    """The queue (see the module's docstring); ``doubtful`` serves :func:`doubtful` labels instead, surest first.

    Args:
        settings: ``queue_random_share``, ``seed`` and ``doubt_confidence``.
        exclude: prediction ids left out (skipped in the app).
    """
    if strategy not in RANKED:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(RANKED)}")
    if limit < 0:
        raise ValueError(f"limit {limit} is negative")
    version, ids, probabilities = cache.current()
    labels = store.current_labels()
    excluded = {int(i) for i in exclude}
    if strategy == "doubtful":
        scores = labelled_scores(labels, ids, probabilities)
        rows = doubtful(scores, settings.doubt_confidence, version)
        picks = [
            (row["prediction_id"], 1.0 - row["label_probability"], False)
            for row in rows
            if row["prediction_id"] not in excluded
        ][:limit]
        by_id = dict(zip((label.prediction_id for label in scores.labels), scores.probabilities, strict=True))
    else:
        pool = ~np.isin(ids, np.fromiter(set(labels) | excluded, dtype=np.int64)) & ~np.isnan(probabilities[:, 0])
        pool_ids, pool_probabilities = ids[pool], probabilities[pool]
        uncertainties = uncertainty(pool_probabilities, strategy)
        order = queue_order(uncertainties, pool_ids, limit, settings.queue_random_share, settings.seed)
        picks = [(int(pool_ids[i]), float(uncertainties[i]), drawn) for i, drawn in order]
        by_id = {pid: pool_probabilities[np.searchsorted(pool_ids, pid)] for pid, _, _ in picks}
    pictures = store.pictures([pid for pid, _, _ in picks])
    return [
        QueueItem(
            pid,
            int(np.argmax(by_id[pid])),
            [float(p) for p in by_id[pid]],
            value,
            version,
            pictures[pid][1],
            pictures[pid][0],
            drawn,
        )
        for pid, value, drawn in picks
    ]
