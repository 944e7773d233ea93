"""The store's rows: what a prediction and a label are, and the checks a row passes before any write.

:mod:`mnist_hitl.store.database` re-exports what callers use; the triggers and CHECKs of
:mod:`mnist_hitl.store.schema` hold the same rules for every other connection.
"""

from __future__ import annotations

import hashlib
import json
import operator
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, text

from mnist_hitl.clock import utc_now
from mnist_hitl.names import LABEL_KINDS, UNDO
from mnist_hitl.store.errors import StoreError

MAX_ID = 2**63 - 1  # SQLite integers and PostgreSQL's BIGINT are signed 64-bit


@dataclass(frozen=True)
class Prediction:
    id: int
    created_at: str
    png: bytes
    predicted_label: int
    probabilities: list[float]
    model_version: str
    latency_ms: float
    source: str


@dataclass(frozen=True)
class Label:
    id: int
    prediction_id: int
    label: int | None  # None for an undo
    kind: str
    created_at: str


def content_hash(png: bytes) -> str:
    """The SHA-256 of a stored picture, as hex."""
    return hashlib.sha256(png).hexdigest()


PREDICTION_COLUMNS = (
    "created_at",
    "png",
    "predicted_label",
    "probabilities",
    "model_version",
    "latency_ms",
    "source",
    "content_hash",
)
INSERT_PREDICTION = (
    f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)})"
    f" VALUES ({', '.join(':' + column for column in PREDICTION_COLUMNS)})"
)


def prediction_row(
    png: bytes,
    predicted_label: int,
    probabilities: Sequence[float],
    model_version: str,
    latency_ms: float,
    source: str = "app",
) -> dict:
    """A prediction's row for :data:`INSERT_PREDICTION` (by column), checked; ``content_hash`` is the picture's."""
    probabilities = [float(p) for p in probabilities]
    if len(probabilities) != 10:
        raise StoreError(f"expected 10 probabilities, got {len(probabilities)}")
    if int(predicted_label) not in range(10):
        raise StoreError(f"predicted label {predicted_label} is outside 0-9")
    if not png:
        raise StoreError("a prediction needs its image")
    values = (
        utc_now("microseconds"),
        png,
        int(predicted_label),
        json.dumps(probabilities),
        model_version,
        float(latency_ms),
        source,
        content_hash(png),
    )
    return dict(zip(PREDICTION_COLUMNS, values, strict=True))


def checked_label(label: object, kind: str) -> int:
    """A digit label of kind ``confirm`` or ``correct``, as an int (an undo has its own method)."""
    try:
        label = operator.index(label)  # ints and numpy ints; refuses floats and strings
    except TypeError:
        raise StoreError(f"label {label!r} is not a digit 0-9") from None
    if label not in range(10):
        raise StoreError(f"label {label} is outside 0-9")
    if kind not in LABEL_KINDS or kind == UNDO:
        hint = " (an undo carries no digit: use undo_label)" if kind == UNDO else ""
        raise StoreError(f"label kind {kind!r} is not one of confirm, correct{hint}")
    return label


def find_import(connection: Connection, picture_hash: str) -> int | None:
    row = connection.execute(
        text("SELECT id FROM predictions WHERE content_hash = :hash AND source = 'import'"), {"hash": picture_hash}
    ).first()
    return None if row is None else int(row[0])


def checked_prediction_id(value: object) -> int:
    """A prediction id as an int; one outside SQLite's range (or below 1) names no prediction."""
    try:
        number = int(value) if isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        raise StoreError(f"prediction id {value!r} is not a whole number") from None
    if not 1 <= number <= MAX_ID:
        raise StoreError(f"no prediction with id {number}")
    return number


def bounded(value: object) -> int:
    """An id to compare with, clamped into SQLite's integers (a larger one compares the same)."""
    return min(max(int(value), -MAX_ID - 1), MAX_ID)


def prediction_from_row(row: RowMapping) -> Prediction:
    return Prediction(
        id=row["id"],
        created_at=row["created_at"],
        png=bytes(row["png"]),
        predicted_label=row["predicted_label"],
        probabilities=json.loads(row["probabilities"]),
        model_version=row["model_version"],
        latency_ms=row["latency_ms"],
        source=row["source"],
    )


COUNTS = (
    "SELECT (SELECT COUNT(*) FROM predictions), (SELECT COUNT(*) FROM labels),"
    " (SELECT COUNT(*) FROM labels WHERE kind = 'confirm'), (SELECT COUNT(*) FROM labels WHERE kind = 'correct'),"
    " (SELECT COUNT(*) FROM labels l JOIN (SELECT MAX(id) AS id FROM labels GROUP BY prediction_id) latest"
    " ON l.id = latest.id WHERE l.kind != 'undo')"
)


def count_rows(connection: Connection | sqlite3.Connection) -> dict[str, int]:
    # one statement, so one snapshot while others write
    if isinstance(connection, sqlite3.Connection):
        row = connection.execute(COUNTS).fetchone()
    else:
        row = connection.execute(text(COUNTS)).one()
    return dict(zip(("predictions", "labels", "confirmations", "corrections", "labelled_predictions"), row))
