"""The shared store: predictions, labels and model versions, on SQLite or PostgreSQL.

By default a SQLite file under the home, in WAL mode with a busy timeout, so every app
kernel, the CLI and the learning loop can write at once without losing rows; with
``MNIST_HITL_DATABASE_URL`` a PostgreSQL database that several machines share, with the
same rules (:mod:`mnist_hitl.store.engine` makes the engines, SQLAlchemy runs the SQL). Labels are append-only: a
later correction never erases an earlier one, and the latest label of a
prediction is the one that counts. Predictions are immutable. Triggers hold
these rules for every connection, whatever its pragmas (see
:mod:`mnist_hitl.store.schema`); an older store is migrated in place when opened.

Every database failure reaches the caller as a :class:`StoreError` saying what to do. A
read-only SQLite store is refused before SQLite opens it, which would leave read-only ``-wal``
and ``-shm`` files behind that keep failing once the store is writable again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy import Connection, bindparam, text

from mnist_hitl.clock import utc_now
from mnist_hitl.names import IMPORT, UNDO
from mnist_hitl.store.backup import backup_sqlite
from mnist_hitl.store.engine import WRITE, is_url, postgres_engine, shown, sqlite_engine
from mnist_hitl.store.errors import DuplicateError, StoreError, explain, explain_postgres, read_only, unwritable
from mnist_hitl.store.rows import (
    INSERT_PREDICTION,
    Label,
    Prediction,
    bounded,
    checked_label,
    checked_prediction_id,
    count_rows,
    find_import,
    prediction_from_row,
    prediction_row,
)
from mnist_hitl.store.schema import SCHEMA_VERSION, migration, read_schema_version


def _database_errors(method: Callable) -> Callable:
    """Raise the method's database errors as StoreErrors that say what to do."""

    @functools.wraps(method)
    def translated(self: Store, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlalchemy.exc.DBAPIError as error:
            raise StoreError(self._explain(error.orig)) from error

    return translated


class Store:
    """Access to the store; cheap to create.

    Args:
        location: the SQLite file (its folder is created if needed), or a
            ``postgresql+psycopg://`` URL (``MNIST_HITL_DATABASE_URL``).
        timeout: seconds a writer waits for another writer's lock.

    Raises:
        StoreError: the store cannot be created, written or read; nothing was touched.
    """

    def __init__(self, location: str | Path, timeout: float = 30.0) -> None:
        self.url = str(location) if is_url(location) else None
        self.path = None if self.url else Path(location)
        self.dialect = "postgresql" if self.url else "sqlite"
        self._lock = threading.RLock()
        self._held: Connection | None = None
        if self.url:
            self.engine = postgres_engine(self.url)
        else:
            self._check_folder()
            self.engine = sqlite_engine(self.path, timeout)
        try:
            self._migrate()
        except BaseException as error:
            self.close()
            if isinstance(error, sqlalchemy.exc.DBAPIError):
                raise StoreError(self._explain(error.orig)) from error
            raise

    def _check_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create the store's folder {self.path.parent} ({error.strerror}):"
                " set MNIST_HITL_HOME to a folder this user can write"
            ) from None
        if blocked := unwritable(self.path):
            raise StoreError(read_only(blocked))

    def _explain(self, error: BaseException) -> str:
        if self.url:
            return explain_postgres(shown(self.url), error)
        if isinstance(error, sqlite3.Error):
            return explain(self.path, error)
        return f"the store {self.path} failed: {error}"

    def close(self) -> None:
        if self.path is not None:  # a PostgreSQL engine is the process's, shared by its stores
            with self._lock:
                if self._held is not None:
                    self._held.close()
                self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """PostgreSQL: a connection from the process's pool. SQLite: the store's one connection, one
        caller at a time, as a sqlite3 connection is; each use ends SQLAlchemy's transaction, and only
        :meth:`_transaction` opens one in SQLite."""
        if self.path is None:
            with self.engine.connect() as conn:
                yield conn
            return
        with self._lock:
            if self._held is None:
                self._held = self.engine.connect()
            try:
                yield self._held
            finally:
                self._held.rollback()  # SQLite: no BEGIN was sent, every statement has committed itself

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._connection() as conn:
            yield conn

    @contextmanager
    def _statement(self) -> Iterator[Connection]:
        """A connection for one write statement, atomic by itself: on SQLite no ``BEGIN``, so the write
        lock is held for that statement alone (writers wait on each other least)."""
        with self._connection() as conn:
            if self.dialect == "sqlite":
                yield conn
            else:
                with conn.begin():
                    yield conn

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One write transaction: all or nothing (SQLite: ``BEGIN IMMEDIATE``, the write lock first)."""
        with self._connection() as conn:
            conn.execution_options(**{WRITE: True})
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.execution_options(**{WRITE: False})

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return  # the usual case: no write lock needed
        if self.dialect == "sqlite":
            self._apply_migrations()
            return
        # One migrating process at a time. The lock is taken in a transaction of its own, so the one that
        # migrates starts after the previous holder's commit, and sees its tables.
        with self.engine.connect() as conn:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_lock(3, 0)"))
            try:
                self._apply_migrations(conn)
            finally:
                with conn.begin():
                    conn.execute(text("SELECT pg_advisory_unlock(3, 0)"))

    def _apply_migrations(self, connection: Connection | None = None) -> None:
        with contextlib.ExitStack() as stack:
            if connection is None:
                conn = stack.enter_context(self._transaction())
            else:
                conn = connection
                stack.enter_context(conn.begin())
            version = read_schema_version(conn, self.dialect)
            if version > SCHEMA_VERSION:
                where = self.path or shown(self.url)
                raise StoreError(
                    f"{where} has schema {version}, newer than this code ({SCHEMA_VERSION}): update mnist-hitl"
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in migration(number, self.dialect):
                    conn.exec_driver_sql(statement)
            if self.dialect == "sqlite":
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
            else:
                conn.execute(text("UPDATE store_schema SET version = :v"), {"v": SCHEMA_VERSION})

    @property
    @_database_errors
    def schema_version(self) -> int:
        with self._read() as conn:
            return read_schema_version(conn, self.dialect)

    def _lock_prediction(self, conn: Connection, prediction_id: int) -> bool:
        """Whether the prediction exists; on PostgreSQL its labels are then this transaction's to change."""
        lock = " FOR NO KEY UPDATE" if self.dialect == "postgresql" else ""
        found = conn.execute(text(f"SELECT 1 FROM predictions WHERE id = :id{lock}"), {"id": prediction_id}).first()
        return found is not None

    # predictions -----------------------------------------------------------------

    @_database_errors
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
        if source != IMPORT:
            with self._statement() as conn:
                return self._insert(conn, _INSERT_PREDICTION, row)
        with self._transaction() as conn:
            if source == IMPORT:
                if self.dialect == "postgresql":  # two imports of one picture: the second waits, then finds it
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(2, hashtext(:hash))"), {"hash": row["content_hash"]}
                    )
                if (existing := find_import(conn, row["content_hash"])) is not None:
                    raise DuplicateError(f"the picture is stored already, as prediction {existing}", existing)
            return self._insert(conn, _INSERT_PREDICTION, row)

    @_database_errors
    def record_predictions(self, predictions: Iterable[Sequence]) -> int:
        """Store many predictions (each :meth:`record_prediction`'s arguments) in one transaction: all or none.

        Returns:
            How many were stored.
        """
        rows = [prediction_row(*arguments) for arguments in predictions]
        if rows:
            with self._transaction() as conn:
                conn.execute(_INSERT_PREDICTION, rows)
        return len(rows)

    @_database_errors
    def find_import(self, picture_hash: str) -> int | None:
        """The id of the imported prediction holding the picture with this :func:`content_hash`, if any."""
        with self._read() as conn:
            return find_import(conn, picture_hash)

    @_database_errors
    def get_prediction(self, prediction_id: int) -> Prediction:
        prediction_id = checked_prediction_id(prediction_id)
        row = self._one("SELECT * FROM predictions WHERE id = :id", id=prediction_id)
        if row is None:
            raise StoreError(f"no prediction with id {prediction_id}")
        return prediction_from_row(row)

    @_database_errors
    def predictions(self, since_id: int = 0) -> list[Prediction]:
        rows = self._all("SELECT * FROM predictions WHERE id > :since ORDER BY id", since=bounded(since_id))
        return [prediction_from_row(row) for row in rows]

    # labels ----------------------------------------------------------------------

    @_database_errors
    def add_label(self, prediction_id: int, label: int, kind: str = "correct") -> int:
        """Append a label to a prediction; refuses bad input without writing anything.

        Args:
            prediction_id: the id returned by :meth:`record_prediction`.
            label: the true digit, 0-9.
            kind: ``confirm`` (the prediction was right) or ``correct``.
        """
        label = checked_label(label, kind)
        prediction_id = checked_prediction_id(prediction_id)
        try:
            with self._statement() as conn:
                return self._insert(conn, _INSERT_LABEL, _label_row(prediction_id, label, kind))
        except sqlalchemy.exc.IntegrityError:  # the only rule an inserted label can break, input checked
            raise StoreError(f"no prediction with id {prediction_id}") from None

    @_database_errors
    def undo_label(self, prediction_id: int) -> tuple[int, Label]:
        """Append an ``undo``: the prediction is unlabelled again, its history kept.

        Returns:
            The undo's label id, and the label it undid.

        Raises:
            StoreError: no such prediction, or it has no label to undo (none, or undone already).
        """
        prediction_id = checked_prediction_id(prediction_id)
        with self._transaction() as conn:
            if not self._lock_prediction(conn, prediction_id):
                raise StoreError(f"no prediction with id {prediction_id}")
            latest = (
                conn.execute(
                    text("SELECT * FROM labels WHERE prediction_id = :id ORDER BY id DESC LIMIT 1"),
                    {"id": prediction_id},
                )
                .mappings()
                .first()
            )
            if latest is None or latest["kind"] == UNDO:
                raise StoreError(f"prediction {prediction_id} has no label to undo")
            undo_id = self._insert(conn, _INSERT_LABEL, _label_row(prediction_id, None, UNDO))
            return int(undo_id), Label(**latest)

    @_database_errors
    def current_labels(self) -> dict[int, Label]:
        """The latest label of every labelled prediction, by prediction id (undone ones are unlabelled)."""
        rows = self._all(
            "SELECT l.* FROM labels l JOIN (SELECT MAX(id) AS id FROM labels GROUP BY prediction_id) latest"
            " ON l.id = latest.id WHERE l.kind != 'undo'"
        )
        return {row["prediction_id"]: Label(**row) for row in rows}

    @_database_errors
    def labels(self, prediction_id: int | None = None) -> list[Label]:
        if prediction_id is None:
            rows = self._all("SELECT * FROM labels ORDER BY id")
        else:
            rows = self._all("SELECT * FROM labels WHERE prediction_id = :id ORDER BY id", id=bounded(prediction_id))
        return [Label(**row) for row in rows]

    @_database_errors
    def count_labels_after(self, label_id: int) -> int:
        """How many labels (confirmations and corrections, not undos) are newer than ``label_id``."""
        query = "SELECT COUNT(*) AS n FROM labels WHERE id > :after AND kind != 'undo'"
        return int(self._one(query, after=bounded(label_id))["n"])

    @_database_errors
    def labelled_predictions(self, since_label_id: int = 0) -> list[tuple[Prediction, Label]]:
        """Each labelled prediction with its latest label (the latest label wins; an undone one is unlabelled).

        Args:
            since_label_id: only predictions whose latest label is newer than this label id.
        """
        rows = self._all(
            "SELECT p.*, l.id AS l_id, l.label AS l_label, l.kind AS l_kind, l.created_at AS l_created_at"
            " FROM predictions p JOIN labels l ON l.prediction_id = p.id"
            " WHERE l.id = (SELECT MAX(id) FROM labels WHERE prediction_id = p.id) AND l.id > :since"
            " AND l.kind != 'undo' ORDER BY l.id",
            since=bounded(since_label_id),
        )
        return [
            (
                prediction_from_row(row),
                Label(row["l_id"], row["id"], row["l_label"], row["l_kind"], row["l_created_at"]),
            )
            for row in rows
        ]

    @_database_errors
    def counts(self) -> dict[str, int]:
        """Numbers of predictions, labels (all, confirms, corrections) and labelled predictions."""
        with self._read() as conn:
            return count_rows(conn)

    def backup(self, target: str | Path) -> dict[str, int]:
        """Copy the store to ``target`` with SQLite's online backup, while others keep writing
        (:func:`~mnist_hitl.store.backup.backup_sqlite`). A PostgreSQL store is backed up with
        PostgreSQL's own tools (``pg_dump``).

        Returns:
            The copy's :meth:`counts`.
        """
        if self.path is None:
            raise StoreError(f"the store is on PostgreSQL ({shown(self.url)}): back it up with pg_dump")
        return backup_sqlite(self.path, Path(target))

    # the review queue's cache of the deployed model's scores ------------------------

    @_database_errors
    def cached_scores(self, model_version: str, after_id: int = 0) -> list[tuple[int, bytes | None, str | None]]:
        """Every prediction after ``after_id``, by id: its scores by ``model_version`` (float32 bytes) if
        cached, else its own probabilities (JSON) if that version made it, else None twice."""
        with self._read() as conn:
            rows = conn.execute(
                text(
                    "SELECT p.id, s.probabilities, CASE WHEN s.probabilities IS NULL AND p.model_version = :version"
                    " THEN p.probabilities END FROM predictions p LEFT JOIN scores s"
                    " ON s.model_version = :version AND s.prediction_id = p.id WHERE p.id > :after ORDER BY p.id"
                ),
                {"version": model_version, "after": bounded(after_id)},
            )
            return [(row[0], None if row[1] is None else bytes(row[1]), row[2]) for row in rows]

    @_database_errors
    def save_scores(self, model_version: str, scores: Iterable[tuple[int, bytes]]) -> None:
        """Cache scores by ``model_version``; those of every other version are dropped."""
        rows = [{"version": model_version, "id": int(i), "blob": blob} for i, blob in scores]
        with self._transaction() as conn:
            conn.execute(text("DELETE FROM scores WHERE model_version != :version"), {"version": model_version})
            if rows:
                conn.execute(
                    text(
                        "INSERT INTO scores (model_version, prediction_id, probabilities) VALUES (:version, :id, :blob)"
                        " ON CONFLICT DO NOTHING"
                    ),
                    rows,
                )

    @_database_errors
    def pictures(self, prediction_ids: Sequence[int]) -> dict[int, tuple[bytes, str]]:
        """The stored picture and the source of each prediction, by id (unknown ids left out)."""
        query = text("SELECT id, png, source FROM predictions WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        found = {}
        with self._read() as conn:
            for start in range(0, len(prediction_ids), 500):
                chunk = [bounded(i) for i in prediction_ids[start : start + 500]]
                rows = conn.execute(query, {"ids": chunk}).mappings()
                found.update((row["id"], (bytes(row["png"]), row["source"])) for row in rows)
        return found

    # model versions -----------------------------------------------------------------

    @_database_errors
    def record_model_version(
        self,
        version: str,
        file: str,
        holdout_accuracy: float | None,
        status: str = "candidate",
        details: dict | None = None,
    ) -> None:
        """Record a trained model (``candidate``, ``deployed`` or ``rejected``)."""
        deployed_at = utc_now("microseconds") if status == "deployed" else None
        with self._transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO model_versions (version, file, holdout_accuracy, created_at, status, deployed_at,"
                    " details) VALUES (:version, :file, :accuracy, :created, :status, :deployed, :details)"
                    " ON CONFLICT(version) DO UPDATE SET status = excluded.status,"
                    " deployed_at = COALESCE(excluded.deployed_at, model_versions.deployed_at),"
                    " holdout_accuracy = COALESCE(excluded.holdout_accuracy, model_versions.holdout_accuracy),"
                    " details = excluded.details"
                ),
                {
                    "version": version,
                    "file": file,
                    "accuracy": holdout_accuracy,
                    "created": utc_now("microseconds"),
                    "status": status,
                    "deployed": deployed_at,
                    "details": json.dumps(details or {}),
                },
            )

    @_database_errors
    def model_versions(self) -> list[dict]:
        rows = self._all("SELECT * FROM model_versions ORDER BY created_at, version")
        return [{**row, "details": json.loads(row["details"])} for row in rows]

    # small key-value facts (e.g. the learning loop's watermark) ---------------------

    @_database_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = :key", key=key)
        return default if row is None else row["value"]

    @_database_errors
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO meta (key, value) VALUES (:key, :value)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                ),
                {"key": key, "value": value},
            )

    def _insert(self, conn: Connection, statement, row: dict) -> int:
        """Insert one row and return its id. SQLite reads it from the connection: a ``RETURNING`` statement
        keeps its write lock until its row is fetched, which makes the other writers wait longer."""
        if self.dialect == "sqlite":
            return int(conn.execute(statement, row).lastrowid)
        return int(conn.execute(_RETURNING_ID[statement], row).scalar_one())

    # reading ------------------------------------------------------------------------

    def _all(self, query: str, **params) -> list[dict]:
        with self._read() as conn:
            return [dict(row) for row in conn.execute(text(query), params).mappings()]

    def _one(self, query: str, **params) -> dict | None:
        with self._read() as conn:
            row = conn.execute(text(query), params).mappings().first()
            return None if row is None else dict(row)


_INSERT_PREDICTION = text(INSERT_PREDICTION)
_INSERT_LABEL = text(
    "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (:prediction, :label, :kind, :created)"
)
_RETURNING_ID = {statement: text(statement.text + " RETURNING id") for statement in (_INSERT_PREDICTION, _INSERT_LABEL)}


def _label_row(prediction_id: int, label: int | None, kind: str) -> dict:
    return {"prediction": prediction_id, "label": label, "kind": kind, "created": utc_now("microseconds")}


def open_store(settings=None) -> Store:
    """The store of the configured home (``MNIST_HITL_HOME``), or ``MNIST_HITL_DATABASE_URL``'s."""
    from mnist_hitl.config import get_settings

    return Store((settings or get_settings()).store_location)
