"""The store's rows: what a prediction and a label are, and the checks a row passes before any write.

:class:`NewPrediction` is the one list of a prediction's fields. The table's columns, the stored
:class:`Prediction`, what :meth:`~mnist_hitl.store.database.Store.record_prediction` takes, the
workbench's :class:`~mnist_hitl.workbench.recording.PredictionResult` and the HTTP API's answers
derive from it, so a new field is declared here (and added to the table by a migration,
:mod:`mnist_hitl.store.schema`). Each field's ``metadata`` documents it for the API's schema, as
keyword arguments of pydantic's ``Field``; this module does not import pydantic.

The store's face, :mod:`mnist_hitl.store`, exports what callers use; the triggers and CHECKs of
:mod:`mnist_hitl.store.schema` hold the same rules for every other connection.
"""

from __future__ import annotations

import hashlib
import json
import operator
import sqlite3
from dataclasses import dataclass, field, fields

from sqlalchemy import Connection, RowMapping, text

from mnist_hitl.clock import utc_now
from mnist_hitl.names import LABEL_KINDS, UNDO
from mnist_hitl.store.errors import StoreError
from mnist_hitl.store.schema import UNKNOWN_REVIEWER

MAX_ID = 2**63 - 1  # SQLite integers and PostgreSQL's BIGINT are signed 64-bit
MAX_REVIEWER_LENGTH = 100  # the schema's CHECK holds every client to it


@dataclass(frozen=True)
class NewPrediction:
    """A prediction as its caller hands it to the store: the picture, what the model read in it, who asked."""

    png: bytes = field(repr=False, metadata={"description": "the 28x28 picture the model saw, as a PNG"})
    predicted_label: int = field(
        metadata={"description": "the digit the model read", "ge": 0, "le": 9, "examples": [7]}
    )
    probabilities: list[float] = field(
        metadata={"description": "the model's probability of each digit, 0 to 9", "min_length": 10, "max_length": 10}
    )
    model_version: str = field(
        metadata={"description": "the version of the model that read it", "examples": ["20260101-120000-000"]}
    )
    latency_ms: float = field(
        metadata={"description": "milliseconds from the picture's arrival to the stored answer", "examples": [1.4]}
    )
    source: str = field(
        default="app", metadata={"description": "who asked: app, cli, api, import...", "examples": ["api"]}
    )


@dataclass(frozen=True, kw_only=True)
class Prediction(NewPrediction):
    """A stored prediction: a :class:`NewPrediction` with its id and the time it was stored."""

    id: int = field(metadata={"description": "the prediction's id", "examples": [1]})
    created_at: str = field(
        metadata={"description": "when it was stored (UTC, ISO 8601)", "examples": ["2026-01-01T12:00:00.000000+00:00"]}
    )


@dataclass(frozen=True)
class Label:
    """One row of a prediction's label history (append-only: the latest counts)."""

    id: int = field(metadata={"description": "the label's id (later labels have larger ids)", "examples": [1]})
    prediction_id: int = field(metadata={"description": "the labelled prediction's id", "examples": [1]})
    label: int | None = field(metadata={"description": "the true digit; null for an undo", "examples": [7]})
    kind: str = field(metadata={"description": "confirm, correct, adjudicate or undo", "examples": ["correct"]})
    created_at: str = field(
        metadata={"description": "when it was given (UTC, ISO 8601)", "examples": ["2026-01-01T12:00:05.000000+00:00"]}
    )
    reviewer: str = field(
        default=UNKNOWN_REVIEWER,
        metadata={"description": "who gave it (unknown: given before labels had reviewers)", "examples": ["ada"]},
    )


def checked_reviewer(name: object) -> str:
    """A reviewer's name, trimmed: 1-100 printable characters."""
    if not isinstance(name, str):
        raise StoreError(f"reviewer {name!r} is not a name")
    trimmed = name.strip()
    if not 1 <= len(trimmed) <= MAX_REVIEWER_LENGTH:
        raise StoreError(f"a reviewer's name has 1-{MAX_REVIEWER_LENGTH} characters, not {len(trimmed)}")
    if not trimmed.isprintable():
        raise StoreError(f"reviewer {trimmed!r} has characters that are not printable")
    return trimmed


def content_hash(png: bytes) -> str:
    """The SHA-256 of a stored picture, as hex."""
    return hashlib.sha256(png).hexdigest()


PREDICTION_COLUMNS = ("created_at", *(column.name for column in fields(NewPrediction)), "content_hash")
INSERT_PREDICTION = (
    f"INSERT INTO predictions ({', '.join(PREDICTION_COLUMNS)})"
    f" VALUES ({', '.join(':' + column for column in PREDICTION_COLUMNS)})"
)


def prediction_row(prediction: NewPrediction) -> dict:
    """A prediction's row for :data:`INSERT_PREDICTION` (by column), checked; ``content_hash`` is the picture's."""
    probabilities = [float(p) for p in prediction.probabilities]
    if len(probabilities) != 10:
        raise StoreError(f"expected 10 probabilities, got {len(probabilities)}")
    if int(prediction.predicted_label) not in range(10):
        raise StoreError(f"predicted label {prediction.predicted_label} is outside 0-9")
    if not prediction.png:
        raise StoreError("a prediction needs its image")
    row = {column.name: getattr(prediction, column.name) for column in fields(NewPrediction)}
    return {
        **row,
        "created_at": utc_now("microseconds"),
        "predicted_label": int(prediction.predicted_label),
        "probabilities": json.dumps(probabilities),
        "latency_ms": float(prediction.latency_ms),
        "content_hash": content_hash(prediction.png),
    }


def checked_label(label: object, kind: str) -> int:
    """A digit label of kind ``confirm``, ``correct`` or ``adjudicate``, as an int (an undo has its own method)."""
    try:
        label = operator.index(label)  # ints and numpy ints; refuses floats and strings
    except TypeError:
        raise StoreError(f"label {label!r} is not a digit 0-9") from None
    if label not in range(10):
        raise StoreError(f"label {label} is outside 0-9")
    if kind not in LABEL_KINDS or kind == UNDO:
        hint = " (an undo carries no digit: use undo_label)" if kind == UNDO else ""
        raise StoreError(f"label kind {kind!r} is not one of confirm, correct, adjudicate{hint}")
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
    values = {column.name: row[column.name] for column in fields(Prediction)}
    return Prediction(**{**values, "png": bytes(row["png"]), "probabilities": json.loads(row["probabilities"])})


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
