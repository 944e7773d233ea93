"""The shared SQLite store: predictions, labels and model versions.

SQLite in WAL mode with a busy timeout, so every app kernel, the CLI and the
learning loop can write at once without losing rows. Labels are append-only: a
later correction never erases an earlier one, and the latest label of a
prediction is the one that counts. Predictions are immutable. Triggers hold
these rules for every connection, whatever its pragmas (see
:mod:`mnist_hitl.store_schema`); an older store is migrated in place when opened.

Every SQLite failure reaches the caller as a :class:`StoreError` saying what to do. A
read-only store is refused before SQLite opens it, which would leave read-only ``-wal``
and ``-shm`` files behind that keep failing once the store is writable again.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mnist_hitl.store_schema import SCHEMA_VERSION, migration

LABEL_KINDS = ("confirm", "correct")
MAX_ID = 2**63 - 1  # SQLite integers are signed 64-bit


class StoreError(ValueError):
    """A write was refused, or the store cannot be used; nothing was written. The message says what to do."""


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


def _sqlite_errors(method: Callable) -> Callable:
    """Raise the method's SQLite errors as StoreErrors that say what to do."""

    @functools.wraps(method)
    def translated(self: Store, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise StoreError(_explain(self.path, error)) from error

    return translated


class Store:
    """Access to the SQLite store; cheap to create, one connection per instance.

    Args:
        path: the SQLite file; its folder is created if needed.
        timeout: seconds a writer waits for another writer's lock.

    Raises:
        StoreError: the store cannot be created, written or read; nothing was touched.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the store's folder {self.path.parent} ({error.strerror}):"
                             " set MNIST_HITL_HOME to a folder this user can write") from None
        if blocked := _unwritable(self.path):
            raise StoreError(_read_only(blocked))
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:  # a folder in its place, say
            raise StoreError(_explain(self.path, error)) from error
        try:
            self._conn.row_factory = sqlite3.Row
            for pragma in (f"busy_timeout = {int(timeout * 1000)}", "journal_mode = WAL", "synchronous = NORMAL",
                           "foreign_keys = ON", "recursive_triggers = ON"):
                self._conn.execute(f"PRAGMA {pragma}")
            self._migrate()
        except BaseException as error:
            self._conn.close()
            if isinstance(error, sqlite3.Error):
                raise StoreError(_explain(self.path, error)) from error
            raise

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
            if self._conn.in_transaction:  # SQLite has already rolled back after some errors (disk full)
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return  # the usual case: no write lock needed
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION}):"
                                 " update mnist-hitl")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in migration(number):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    @_sqlite_errors
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    # predictions -----------------------------------------------------------------

    @_sqlite_errors
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

    @_sqlite_errors
    def get_prediction(self, prediction_id: int) -> Prediction:
        prediction_id = _prediction_id(prediction_id)
        row = self._conn.execute("SELECT * FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        if row is None:
            raise StoreError(f"no prediction with id {prediction_id}")
        return _prediction(row)

    @_sqlite_errors
    def predictions(self, since_id: int = 0) -> list[Prediction]:
        rows = self._conn.execute("SELECT * FROM predictions WHERE id > ? ORDER BY id", (_bounded(since_id),))
        return [_prediction(row) for row in rows]

    # labels ----------------------------------------------------------------------

    @_sqlite_errors
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
        prediction_id = _prediction_id(prediction_id)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM predictions WHERE id = ?", (prediction_id,)).fetchone() is None:
                raise StoreError(f"no prediction with id {prediction_id}")
            cursor = conn.execute(
                "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (?, ?, ?, ?)",
                (prediction_id, label, kind, utc_now()),
            )
            return int(cursor.lastrowid)

    @_sqlite_errors
    def labels(self, prediction_id: int | None = None) -> list[Label]:
        if prediction_id is None:
            rows = self._conn.execute("SELECT * FROM labels ORDER BY id")
        else:
            rows = self._conn.execute("SELECT * FROM labels WHERE prediction_id = ? ORDER BY id",
                                      (_bounded(prediction_id),))
        return [Label(**dict(row)) for row in rows]

    @_sqlite_errors
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
            (_bounded(since_label_id),),
        )
        return [
            (_prediction(row), Label(row["l_id"], row["id"], row["l_label"], row["l_kind"], row["l_created_at"]))
            for row in rows
        ]

    @_sqlite_errors
    def counts(self) -> dict[str, int]:
        """Numbers of predictions, labels (all, confirms, corrections) and labelled predictions."""
        return _counts(self._conn)

    def backup(self, target: str | Path) -> dict[str, int]:
        """Copy the store to ``target`` with SQLite's online backup, while others keep writing.

        The copy is one consistent snapshot (writers carry on meanwhile, in WAL mode) in a
        single file (no ``-wal``), written beside ``target``, checked with ``PRAGMA
        integrity_check``, then renamed over it: a failed backup leaves ``target`` as it was.

        Returns:
            The copy's :meth:`counts`.
        """
        target = Path(target)
        if target.exists() and target.resolve() == self.path.resolve():
            raise StoreError("a backup must go to another file than the store itself")
        partial = target.with_name(f".{target.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            with closing(sqlite3.connect(partial, isolation_level=None)) as copy:
                self._conn.backup(copy)  # every page in one step: one read transaction, one snapshot
                copy.execute("PRAGMA journal_mode = DELETE")
                verdict = copy.execute("PRAGMA integrity_check").fetchone()[0]
                if verdict != "ok":
                    raise StoreError(f"the backup failed its integrity check ({verdict}); nothing was replaced")
                counts = _counts(copy)
            os.replace(partial, target)
        except BaseException as error:
            partial.unlink(missing_ok=True)
            if isinstance(error, sqlite3.Error):
                raise StoreError(f"the backup to {target} failed ({error}): check that its folder exists"
                                 " and this user can write it") from error
            raise
        return counts

    # model versions -----------------------------------------------------------------

    @_sqlite_errors
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

    @_sqlite_errors
    def model_versions(self) -> list[dict]:
        rows = self._conn.execute("SELECT * FROM model_versions ORDER BY created_at, version")
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    # small key-value facts (e.g. the learning loop's watermark) ---------------------

    @_sqlite_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row["value"]

    @_sqlite_errors
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _counts(connection: sqlite3.Connection) -> dict[str, int]:
    # one statement, so one snapshot while others write
    row = connection.execute(
        "SELECT (SELECT COUNT(*) FROM predictions), (SELECT COUNT(*) FROM labels),"
        " (SELECT COUNT(*) FROM labels WHERE kind = 'confirm'), (SELECT COUNT(*) FROM labels WHERE kind = 'correct'),"
        " (SELECT COUNT(DISTINCT prediction_id) FROM labels)"
    ).fetchone()
    return dict(zip(("predictions", "labels", "confirmations", "corrections", "labelled_predictions"), row))


def _prediction_id(value: object) -> int:
    """A prediction id as an int; one outside SQLite's range (or below 1) names no prediction."""
    try:
        number = int(value) if isinstance(value, str) else operator.index(value)
    except (TypeError, ValueError):
        raise StoreError(f"prediction id {value!r} is not a whole number") from None
    if not 1 <= number <= MAX_ID:
        raise StoreError(f"no prediction with id {number}")
    return number


def _bounded(value: object) -> int:
    """An id to compare with, clamped into SQLite's integers (a larger one compares the same)."""
    return min(max(int(value), -MAX_ID - 1), MAX_ID)


def _unwritable(path: Path) -> list[Path]:
    """What keeps this user from writing the store: read-only files, or a read-only folder where one is missing."""
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    blocked = [file for file in files if file.exists() and not os.access(file, os.W_OK)]
    if not all(file.exists() for file in files) and not os.access(path.parent, os.W_OK | os.X_OK):
        blocked.insert(0, path.parent)
    return blocked


def _read_only(blocked: list[Path]) -> str:
    return (f"the store is read-only for this user: {', '.join(map(str, blocked))} cannot be written; make"
            f" {'it' if len(blocked) == 1 else 'them'} writable (chmod u+w), or set MNIST_HITL_HOME to another folder")


def _explain(path: Path, error: sqlite3.Error) -> str:
    """One line saying what went wrong with the store at ``path``, and what to do."""
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError):
        return f"refused by the store: {text}"
    if blocked := _unwritable(path):
        return _read_only(blocked)
    if "locked" in text or "busy" in text:
        return f"the store {path} stayed locked by another process for longer than the timeout ({text}): try again"
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a usable SQLite store ({text}): move it aside, or put a backup in its place"
    if "unable to open" in text:
        return f"cannot open the store {path} ({text}): check that its folder exists and this user can write it"
    return f"the store {path} failed: {text}"


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
