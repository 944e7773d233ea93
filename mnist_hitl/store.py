"""The shared SQLite store: predictions, labels and model versions.

SQLite in WAL mode with a busy timeout, so every app kernel, the CLI and the
learning loop can write at once without losing rows. Labels are append-only (a
trigger refuses UPDATE and DELETE): a later correction never erases an earlier
one, and the latest label of a prediction is the one that counts. The schema
carries a version (``PRAGMA user_version``) for later migrations.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA_VERSION = 1
LABEL_KINDS = ("confirm", "correct")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    png BLOB NOT NULL,
    predicted_label INTEGER NOT NULL CHECK (predicted_label BETWEEN 0 AND 9),
    probabilities TEXT NOT NULL,
    model_version TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    source TEXT NOT NULL DEFAULT 'app'
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id INTEGER NOT NULL REFERENCES predictions(id),
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct')),
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_prediction ON labels(prediction_id, id);
CREATE TRIGGER IF NOT EXISTS labels_no_update BEFORE UPDATE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_delete BEFORE DELETE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TABLE IF NOT EXISTS model_versions (
    version TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    holdout_accuracy REAL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'candidate' CHECK (status IN ('candidate', 'deployed', 'rejected')),
    deployed_at TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(ValueError):
    """A write was refused; nothing was written."""


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
    label: int
    kind: str
    created_at: str


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Store:
    """Access to the SQLite store; cheap to create, one connection per instance.

    Args:
        path: the SQLite file; its folder is created if needed.
        timeout: seconds a writer waits for another writer's lock.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    # predictions -----------------------------------------------------------------

    def record_prediction(
        self,
        png: bytes,
        predicted_label: int,
        probabilities: Sequence[float],
        model_version: str,
        latency_ms: float,
        source: str = "app",
    ) -> int:
        """Store one prediction and return its id."""
        probabilities = [float(p) for p in probabilities]
        if len(probabilities) != 10:
            raise StoreError(f"expected 10 probabilities, got {len(probabilities)}")
        if int(predicted_label) not in range(10):
            raise StoreError(f"predicted label {predicted_label} is outside 0-9")
        if not png:
            raise StoreError("a prediction needs its image")
        with self._transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version,"
                " latency_ms, source) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (utc_now(), png, int(predicted_label), json.dumps(probabilities), model_version,
                 float(latency_ms), source),
            )
            return int(cursor.lastrowid)

    def get_prediction(self, prediction_id: int) -> Prediction:
        row = self._conn.execute("SELECT * FROM predictions WHERE id = ?", (int(prediction_id),)).fetchone()
        if row is None:
            raise StoreError(f"no prediction with id {prediction_id}")
        return _prediction(row)

    def predictions(self, since_id: int = 0) -> list[Prediction]:
        rows = self._conn.execute("SELECT * FROM predictions WHERE id > ? ORDER BY id", (since_id,))
        return [_prediction(row) for row in rows]

    # labels ----------------------------------------------------------------------

    def add_label(self, prediction_id: int, label: int, kind: str = "correct") -> int:
        """Append a label to a prediction; refuses bad input without writing anything.

        Args:
            prediction_id: the id returned by :meth:`record_prediction`.
            label: the true digit, 0-9.
            kind: ``confirm`` (the prediction was right) or ``correct``.
        """
        try:
            label = operator.index(label)  # ints and numpy ints; refuses floats and strings
        except TypeError:
            raise StoreError(f"label {label!r} is not a digit 0-9") from None
        if label not in range(10):
            raise StoreError(f"label {label} is outside 0-9")
        if kind not in LABEL_KINDS:
            raise StoreError(f"label kind {kind!r} is not one of {', '.join(LABEL_KINDS)}")
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM predictions WHERE id = ?", (int(prediction_id),)).fetchone() is None:
                raise StoreError(f"no prediction with id {prediction_id}")
            cursor = conn.execute(
                "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (?, ?, ?, ?)",
                (int(prediction_id), label, kind, utc_now()),
            )
            return int(cursor.lastrowid)

    def labels(self, prediction_id: int | None = None) -> list[Label]:
        if prediction_id is None:
            rows = self._conn.execute("SELECT * FROM labels ORDER BY id")
        else:
            rows = self._conn.execute("SELECT * FROM labels WHERE prediction_id = ? ORDER BY id", (prediction_id,))
        return [Label(**dict(row)) for row in rows]

    def labelled_predictions(self, since_label_id: int = 0) -> list[tuple[Prediction, Label]]:
        """Each labelled prediction with its latest label (the latest label wins).

        Args:
            since_label_id: only predictions whose latest label is newer than this label id.
        """
        rows = self._conn.execute(
            "SELECT p.*, l.id AS l_id, l.label AS l_label, l.kind AS l_kind, l.created_at AS l_created_at"
            " FROM predictions p JOIN labels l ON l.prediction_id = p.id"
            " WHERE l.id = (SELECT MAX(id) FROM labels WHERE prediction_id = p.id) AND l.id > ?"
            " ORDER BY l.id",
            (since_label_id,),
        )
        return [
            (_prediction(row), Label(row["l_id"], row["id"], row["l_label"], row["l_kind"], row["l_created_at"]))
            for row in rows
        ]

    def counts(self) -> dict[str, int]:
        """Numbers of predictions, labels (all, confirms, corrections) and labelled predictions."""
        one = self._conn.execute
        return {
            "predictions": one("SELECT COUNT(*) FROM predictions").fetchone()[0],
            "labels": one("SELECT COUNT(*) FROM labels").fetchone()[0],
            "confirmations": one("SELECT COUNT(*) FROM labels WHERE kind = 'confirm'").fetchone()[0],
            "corrections": one("SELECT COUNT(*) FROM labels WHERE kind = 'correct'").fetchone()[0],
            "labelled_predictions": one("SELECT COUNT(DISTINCT prediction_id) FROM labels").fetchone()[0],
        }

    # model versions -----------------------------------------------------------------

    def record_model_version(
        self, version: str, file: str, holdout_accuracy: float | None, status: str = "candidate",
        details: dict | None = None,
    ) -> None:
        """Record a trained model (``candidate``, ``deployed`` or ``rejected``)."""
        deployed_at = utc_now() if status == "deployed" else None
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO model_versions (version, file, holdout_accuracy, created_at, status, deployed_at, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(version) DO UPDATE SET status = excluded.status,"
                " deployed_at = COALESCE(excluded.deployed_at, model_versions.deployed_at),"
                " holdout_accuracy = COALESCE(excluded.holdout_accuracy, model_versions.holdout_accuracy),"
                " details = excluded.details",
                (version, file, holdout_accuracy, utc_now(), status, deployed_at, json.dumps(details or {})),
            )

    def model_versions(self) -> list[dict]:
        rows = self._conn.execute("SELECT * FROM model_versions ORDER BY created_at, version")
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    # small key-value facts (e.g. the learning loop's watermark) ---------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _prediction(row: sqlite3.Row) -> Prediction:
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


def open_store(settings=None) -> Store:
    """The store of the configured home (``MNIST_HITL_HOME``)."""
    from mnist_hitl.config import get_settings

    return Store((settings or get_settings()).db_path)
