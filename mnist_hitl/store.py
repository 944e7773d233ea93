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
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

from mnist_hitl.store_errors import DuplicateError, StoreError, explain, read_only, unwritable
from mnist_hitl.store_rows import (
    IMPORT,
    INSERT_PREDICTION,
    LABEL_KINDS,
    MAX_ID,
    UNDO,
    Label,
    Prediction,
    bounded,
    checked_label,
    checked_prediction_id,
    content_hash,
    find_import,
    prediction_from_row,
    prediction_row,
    utc_now,
)
from mnist_hitl.store_schema import HASH_FUNCTION, SCHEMA_VERSION, migration

__all__ = [
    "IMPORT",
    "LABEL_KINDS",
    "MAX_ID",
    "UNDO",
    "DuplicateError",
    "Label",
    "Prediction",
    "Store",
    "StoreError",
    "content_hash",
    "open_store",
    "utc_now",
]


def _sqlite_errors(method: Callable) -> Callable:
    """Raise the method's SQLite errors as StoreErrors that say what to do."""

    @functools.wraps(method)
    def translated(self: Store, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise StoreError(explain(self.path, error)) from error

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
            raise StoreError(
                f"cannot create the store's folder {self.path.parent} ({error.strerror}):"
                " set MNIST_HITL_HOME to a folder this user can write"
            ) from None
        if blocked := unwritable(self.path):
            raise StoreError(read_only(blocked))
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:  # a folder in its place, say
            raise StoreError(explain(self.path, error)) from error
        try:
            self._conn.row_factory = sqlite3.Row
            for pragma in (
                f"busy_timeout = {int(timeout * 1000)}",
                "journal_mode = WAL",
                "synchronous = NORMAL",
                "foreign_keys = ON",
                "recursive_triggers = ON",
            ):
                self._conn.execute(f"PRAGMA {pragma}")
            self._migrate()
        except BaseException as error:
            self._conn.close()
            if isinstance(error, sqlite3.Error):
                raise StoreError(explain(self.path, error)) from error
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
        self._conn.create_function(HASH_FUNCTION, 1, content_hash, deterministic=True)
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION}): update mnist-hitl"
                )
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
        """Store one prediction and return its id.

        Raises:
            DuplicateError: an ``import`` of a picture imported already; its id is on the error.
        """
        row = prediction_row(png, predicted_label, probabilities, model_version, latency_ms, source)
        with self._transaction() as conn:
            if source == IMPORT and (existing := find_import(conn, row[-1])) is not None:
                raise DuplicateError(f"the picture is stored already, as prediction {existing}", existing)
            return int(conn.execute(INSERT_PREDICTION, row).lastrowid)

    @_sqlite_errors
    def record_predictions(self, predictions: Iterable[Sequence]) -> int:
        """Store many predictions (each :meth:`record_prediction`'s arguments) in one transaction: all or none.

        Returns:
            How many were stored.
        """
        rows = [prediction_row(*arguments) for arguments in predictions]
        with self._transaction() as conn:
            conn.executemany(INSERT_PREDICTION, rows)
        return len(rows)

    @_sqlite_errors
    def find_import(self, picture_hash: str) -> int | None:
        """The id of the imported prediction holding the picture with this :func:`content_hash`, if any."""
        return find_import(self._conn, picture_hash)

    @_sqlite_errors
    def get_prediction(self, prediction_id: int) -> Prediction:
        prediction_id = checked_prediction_id(prediction_id)
        row = self._conn.execute("SELECT * FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        if row is None:
            raise StoreError(f"no prediction with id {prediction_id}")
        return prediction_from_row(row)

    @_sqlite_errors
    def predictions(self, since_id: int = 0) -> list[Prediction]:
        rows = self._conn.execute("SELECT * FROM predictions WHERE id > ? ORDER BY id", (bounded(since_id),))
        return [prediction_from_row(row) for row in rows]

    # labels ----------------------------------------------------------------------

    @_sqlite_errors
    def add_label(self, prediction_id: int, label: int, kind: str = "correct") -> int:
        """Append a label to a prediction; refuses bad input without writing anything.

        Args:
            prediction_id: the id returned by :meth:`record_prediction`.
            label: the true digit, 0-9.
            kind: ``confirm`` (the prediction was right) or ``correct``.
        """
        label = checked_label(label, kind)
        prediction_id = checked_prediction_id(prediction_id)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM predictions WHERE id = ?", (prediction_id,)).fetchone() is None:
                raise StoreError(f"no prediction with id {prediction_id}")
            cursor = conn.execute(
                "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (?, ?, ?, ?)",
                (prediction_id, label, kind, utc_now()),
            )
            return int(cursor.lastrowid)

    @_sqlite_errors
    def undo_label(self, prediction_id: int) -> tuple[int, Label]:
        """Append an ``undo``: the prediction is unlabelled again, its history kept.

        Returns:
            The undo's label id, and the label it undid.

        Raises:
            StoreError: no such prediction, or it has no label to undo (none, or undone already).
        """
        prediction_id = checked_prediction_id(prediction_id)
        with self._transaction() as conn:
            latest = conn.execute(
                "SELECT * FROM labels WHERE prediction_id = ? ORDER BY id DESC LIMIT 1", (prediction_id,)
            ).fetchone()
            if latest is None or latest["kind"] == UNDO:
                if conn.execute("SELECT 1 FROM predictions WHERE id = ?", (prediction_id,)).fetchone() is None:
                    raise StoreError(f"no prediction with id {prediction_id}")
                raise StoreError(f"prediction {prediction_id} has no label to undo")
            cursor = conn.execute(
                "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (?, NULL, ?, ?)",
                (prediction_id, UNDO, utc_now()),
            )
            return int(cursor.lastrowid), Label(**dict(latest))

    @_sqlite_errors
    def current_labels(self) -> dict[int, Label]:
        """The latest label of every labelled prediction, by prediction id (undone ones are unlabelled)."""
        rows = self._conn.execute(
            "SELECT l.* FROM labels l JOIN (SELECT MAX(id) AS id FROM labels GROUP BY prediction_id) latest"
            " ON l.id = latest.id WHERE l.kind != 'undo'"
        )
        return {row["prediction_id"]: Label(**dict(row)) for row in rows}

    @_sqlite_errors
    def labels(self, prediction_id: int | None = None) -> list[Label]:
        if prediction_id is None:
            rows = self._conn.execute("SELECT * FROM labels ORDER BY id")
        else:
            rows = self._conn.execute(
                "SELECT * FROM labels WHERE prediction_id = ? ORDER BY id", (bounded(prediction_id),)
            )
        return [Label(**dict(row)) for row in rows]

    @_sqlite_errors
    def count_labels_after(self, label_id: int) -> int:
        """How many labels (confirmations and corrections, not undos) are newer than ``label_id``."""
        query = "SELECT COUNT(*) FROM labels WHERE id > ? AND kind != 'undo'"
        return self._conn.execute(query, (bounded(label_id),)).fetchone()[0]

    @_sqlite_errors
    def labelled_predictions(self, since_label_id: int = 0) -> list[tuple[Prediction, Label]]:
        """Each labelled prediction with its latest label (the latest label wins; an undone one is unlabelled).

        Args:
            since_label_id: only predictions whose latest label is newer than this label id.
        """
        rows = self._conn.execute(
            "SELECT p.*, l.id AS l_id, l.label AS l_label, l.kind AS l_kind, l.created_at AS l_created_at"
            " FROM predictions p JOIN labels l ON l.prediction_id = p.id"
            " WHERE l.id = (SELECT MAX(id) FROM labels WHERE prediction_id = p.id) AND l.id > ? AND l.kind != 'undo'"
            " ORDER BY l.id",
            (bounded(since_label_id),),
        )
        return [
            (
                prediction_from_row(row),
                Label(row["l_id"], row["id"], row["l_label"], row["l_kind"], row["l_created_at"]),
            )
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
                raise StoreError(
                    f"the backup to {target} failed ({error}): check that its folder exists and this user can write it"
                ) from error
            raise
        return counts

    # the review queue's cache of the deployed model's scores ------------------------

    @_sqlite_errors
    def cached_scores(self, model_version: str, after_id: int = 0) -> list[tuple[int, bytes | None, str | None]]:
        """Every prediction after ``after_id``, by id: its scores by ``model_version`` (float32 bytes) if
        cached, else its own probabilities (JSON) if that version made it, else None twice."""
        return self._conn.execute(
            "SELECT p.id, s.probabilities, CASE WHEN s.probabilities IS NULL AND p.model_version = ?1"
            " THEN p.probabilities END FROM predictions p LEFT JOIN scores s"
            " ON s.model_version = ?1 AND s.prediction_id = p.id WHERE p.id > ?2 ORDER BY p.id",
            (model_version, bounded(after_id)),
        ).fetchall()

    @_sqlite_errors
    def save_scores(self, model_version: str, scores: Iterable[tuple[int, bytes]]) -> None:
        """Cache scores by ``model_version``; those of every other version are dropped."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM scores WHERE model_version != ?", (model_version,))
            conn.executemany(
                "INSERT OR IGNORE INTO scores (model_version, prediction_id, probabilities) VALUES (?, ?, ?)",
                ((model_version, int(i), blob) for i, blob in scores),
            )

    @_sqlite_errors
    def pictures(self, prediction_ids: Sequence[int]) -> dict[int, tuple[bytes, str]]:
        """The stored picture and the source of each prediction, by id (unknown ids left out)."""
        found = {}
        for start in range(0, len(prediction_ids), 500):
            chunk = [int(i) for i in prediction_ids[start : start + 500]]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(f"SELECT id, png, source FROM predictions WHERE id IN ({marks})", chunk)
            found.update((row["id"], (bytes(row["png"]), row["source"])) for row in rows)
        return found

    # model versions -----------------------------------------------------------------

    @_sqlite_errors
    def record_model_version(
        self,
        version: str,
        file: str,
        holdout_accuracy: float | None,
        status: str = "candidate",
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
        " (SELECT COUNT(*) FROM labels l JOIN (SELECT MAX(id) AS id FROM labels GROUP BY prediction_id) latest"
        " ON l.id = latest.id WHERE l.kind != 'undo')"
    ).fetchone()
    return dict(zip(("predictions", "labels", "confirmations", "corrections", "labelled_predictions"), row))


def open_store(settings=None) -> Store:
    """The store of the configured home (``MNIST_HITL_HOME``)."""
    from mnist_hitl.config import get_settings

    return Store((settings or get_settings()).db_path)
