"""The shared store: predictions, labels and model versions, on SQLite or PostgreSQL.

By default a SQLite file under the home, in WAL mode with a busy timeout, so every app
kernel, the CLI and the learning loop can write at once without losing rows; with
``MNIST_HITL_DATABASE_URL`` a PostgreSQL database that several machines share, with the
same rules. Labels are append-only: a later correction never erases an earlier one, and the
latest label of a prediction is the one that counts. Predictions are immutable. Triggers hold
these rules for every connection, whatever its pragmas (see :mod:`mnist_hitl.store.schema`).

:class:`Store` is what the store keeps and how it is asked; how it reaches the database (the
engine, the connection, transactions, migrations on opening, errors in one line) is its base,
:class:`~mnist_hitl.store.access.StoreAccess`. A base class rather than a held object: every
method here is a query inside one of the base's connections, and the store's callers keep one
object with one face (``store.engine``, ``store.close()``, ``store.schema_version``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy import Connection, bindparam, text

from mnist_hitl.clock import utc_now
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.names import IMPORT, UNDO
from mnist_hitl.store.access import database_errors
from mnist_hitl.store.backup import backup_sqlite
from mnist_hitl.store.engine import shown
from mnist_hitl.store.errors import DuplicateError, StoreError
from mnist_hitl.store.leases import LeaseAccess
from mnist_hitl.store.rows import (
    INSERT_PREDICTION,
    Label,
    NewPrediction,
    Prediction,
    bounded,
    checked_label,
    checked_prediction_id,
    checked_reviewer,
    count_rows,
    find_import,
    prediction_from_row,
    prediction_row,
)
from mnist_hitl.store.schema import UNKNOWN_REVIEWER


class Store(LeaseAccess):
    """The store: predictions, append-only labels, model versions, the loop's watermarks, the queue's score cache.

    Cheap to create; one per process, shared by its threads (they take turns on its connection).
    Opened as :class:`~mnist_hitl.store.access.StoreAccess` says (its location, timeout and errors);
    a process builds it with :func:`open_store`. The queue's leases are
    :class:`~mnist_hitl.store.leases.LeaseAccess`'s.
    """

    def _lock_prediction(self, conn: Connection, prediction_id: int) -> bool:
        """Whether the prediction exists; on PostgreSQL its labels are then this transaction's to change."""
        lock = " FOR NO KEY UPDATE" if self.dialect == "postgresql" else ""
        found = conn.execute(text(f"SELECT 1 FROM predictions WHERE id = :id{lock}"), {"id": prediction_id}).first()
        return found is not None

    # predictions -----------------------------------------------------------------

    @database_errors
    def record_prediction(self, *values: object, **named: object) -> int:
        """Store one prediction and return its id.

        Args:
            values, named: the fields of a :class:`~mnist_hitl.store.rows.NewPrediction`, in order or by
                name: ``png, predicted_label, probabilities, model_version, latency_ms, source="app"``.

        Raises:
            DuplicateError: an ``import`` of a picture imported already; its id is on the error.
        """
        prediction = NewPrediction(*values, **named)
        row, source = prediction_row(prediction), prediction.source
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

    @database_errors
    def record_predictions(self, predictions: Iterable[Sequence]) -> int:
        """Store many predictions (each a :meth:`record_prediction`'s fields, in order) in one transaction: all or none.

        Returns:
            How many were stored.
        """
        rows = [prediction_row(NewPrediction(*values)) for values in predictions]
        if rows:
            with self._transaction() as conn:
                conn.execute(_INSERT_PREDICTION, rows)
        return len(rows)

    @database_errors
    def find_import(self, picture_hash: str) -> int | None:
        """The id of the imported prediction holding the picture with this :func:`content_hash`, if any."""
        with self._read() as conn:
            return find_import(conn, picture_hash)

    @database_errors
    def get_prediction(self, prediction_id: int) -> Prediction:
        prediction_id = checked_prediction_id(prediction_id)
        row = self._one("SELECT * FROM predictions WHERE id = :id", id=prediction_id)
        if row is None:
            raise StoreError(f"no prediction with id {prediction_id}")
        return prediction_from_row(row)

    @database_errors
    def predictions(self, since_id: int = 0) -> list[Prediction]:
        rows = self._all("SELECT * FROM predictions WHERE id > :since ORDER BY id", since=bounded(since_id))
        return [prediction_from_row(row) for row in rows]

    # labels ----------------------------------------------------------------------

    @database_errors
    def add_label(self, prediction_id: int, label: int, kind: str = "correct", reviewer: str = UNKNOWN_REVIEWER) -> int:
        """Append a label to a prediction; refuses bad input without writing anything.

        Args:
            prediction_id: the id returned by :meth:`record_prediction`.
            label: the true digit, 0-9.
            kind: ``confirm`` (the prediction was right), ``correct``, or ``adjudicate`` (a digit decided
                where reviewers disagree, or for a suspect label: :mod:`mnist_hitl.workbench.adjudication`).
            reviewer: who gave it (1-100 printable characters, trimmed); their lease on the drawing ends.
        """
        label = checked_label(label, kind)
        reviewer = checked_reviewer(reviewer)
        prediction_id = checked_prediction_id(prediction_id)
        try:
            with self._transaction() as conn:
                self._end_lease(conn, prediction_id, reviewer)  # first: the label-order lock is held the least
                return self._insert_label(conn, _label_row(prediction_id, label, kind, reviewer))
        except sqlalchemy.exc.IntegrityError:  # the only rule an inserted label can break, input checked
            raise StoreError(f"no prediction with id {prediction_id}") from None

    @database_errors
    def undo_label(self, prediction_id: int, reviewer: str = UNKNOWN_REVIEWER) -> tuple[int, Label]:
        """Append an ``undo`` by ``reviewer``: the prediction is unlabelled again, its history kept; their lease on
        the drawing ends.

        Returns:
            The undo's label id, and the label it undid.

        Raises:
            StoreError: no such prediction, or it has no label to undo (none, or undone already).
        """
        prediction_id = checked_prediction_id(prediction_id)
        reviewer = checked_reviewer(reviewer)
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
            self._end_lease(conn, prediction_id, reviewer)
            undo_id = self._insert_label(conn, _label_row(prediction_id, None, UNDO, reviewer))
            return int(undo_id), Label(**latest)

    @database_errors
    def current_labels(self) -> dict[int, Label]:
        """The latest label of every labelled prediction, by prediction id (undone ones are unlabelled)."""
        rows = self._all(
            "SELECT l.* FROM labels l JOIN (SELECT MAX(id) AS id FROM labels GROUP BY prediction_id) latest"
            " ON l.id = latest.id WHERE l.kind != 'undo'"
        )
        return {row["prediction_id"]: Label(**row) for row in rows}

    @database_errors
    def labels(self, prediction_id: int | None = None) -> list[Label]:
        if prediction_id is None:
            rows = self._all("SELECT * FROM labels ORDER BY id")
        else:
            rows = self._all("SELECT * FROM labels WHERE prediction_id = :id ORDER BY id", id=bounded(prediction_id))
        return [Label(**row) for row in rows]

    @database_errors
    def count_labels_after(self, label_id: int) -> int:
        """How many labels (confirmations and corrections, not undos) are newer than ``label_id``."""
        query = "SELECT COUNT(*) AS n FROM labels WHERE id > :after AND kind != 'undo'"
        return int(self._one(query, after=bounded(label_id))["n"])

    @database_errors
    def labelled_predictions(self, since_label_id: int = 0) -> list[tuple[Prediction, Label]]:
        """Each labelled prediction with its latest label (the latest label wins; an undone one is unlabelled).

        Args:
            since_label_id: only predictions whose latest label is newer than this label id.
        """
        rows = self._all(
            "SELECT p.*, l.id AS l_id, l.label AS l_label, l.kind AS l_kind, l.created_at AS l_created_at,"
            " l.reviewer AS l_reviewer"
            " FROM predictions p JOIN labels l ON l.prediction_id = p.id"
            " WHERE l.id = (SELECT MAX(id) FROM labels WHERE prediction_id = p.id) AND l.id > :since"
            " AND l.kind != 'undo' ORDER BY l.id",
            since=bounded(since_label_id),
        )
        return [
            (
                prediction_from_row(row),
                Label(row["l_id"], row["id"], row["l_label"], row["l_kind"], row["l_created_at"], row["l_reviewer"]),
            )
            for row in rows
        ]

    @database_errors
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

    @database_errors
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

    @database_errors
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

    @database_errors
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

    @database_errors
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

    @database_errors
    def model_versions(self) -> list[dict]:
        rows = self._all("SELECT * FROM model_versions ORDER BY created_at, version")
        return [{**row, "details": json.loads(row["details"])} for row in rows]

    # small key-value facts (e.g. the learning loop's watermark) ---------------------

    @database_errors
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = :key", key=key)
        return default if row is None else row["value"]

    @database_errors
    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO meta (key, value) VALUES (:key, :value)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                ),
                {"key": key, "value": value},
            )

    def _insert_label(self, conn: Connection, row: dict) -> int:
        """Insert one label, so that label ids become visible in id order: the watermarks (a cycle's
        ``through_label_id`` is the largest label id it read) never count a label that commits later.

        PostgreSQL assigns an identity when the row is inserted, not when it commits, so two writers
        can commit ids 8 and 7 in that order, and a reader between the two commits sees 8 without 7.
        Here every label insert first takes one transaction-level advisory lock, held until its
        commit: ids are assigned and committed one writer at a time. SQLite needs nothing: its
        writers hold the database's write lock from the insert to the commit.
        """
        if self.dialect == "postgresql":
            conn.execute(_LABEL_ORDER_LOCK)
        return self._insert(conn, _INSERT_LABEL, row)

    def _insert(self, conn: Connection, statement, row: dict) -> int:
        """Insert one row and return its id. SQLite reads it from the connection: a ``RETURNING`` statement
        keeps its write lock until its row is fetched, which makes the other writers wait longer."""
        if self.dialect == "sqlite":
            return int(conn.execute(statement, row).lastrowid)
        return int(conn.execute(_RETURNING_ID[statement], row).scalar_one())


_INSERT_PREDICTION = text(INSERT_PREDICTION)
_INSERT_LABEL = text(
    "INSERT INTO labels (prediction_id, label, kind, created_at, reviewer)"
    " VALUES (:prediction, :label, :kind, :created, :reviewer)"
)
# Taken before every label insert, until the commit (see Store._insert_label); the lock keys' classes are
# listed in mnist_hitl.learning.loop.lock.
_LABEL_ORDER_LOCK = text("SELECT pg_advisory_xact_lock(4, 0)")
_RETURNING_ID = {statement: text(statement.text + " RETURNING id") for statement in (_INSERT_PREDICTION, _INSERT_LABEL)}


def _label_row(prediction_id: int, label: int | None, kind: str, reviewer: str) -> dict:
    created = utc_now("microseconds")
    return {"prediction": prediction_id, "label": label, "kind": kind, "created": created, "reviewer": reviewer}


def open_store(settings: Settings | None = None) -> Store:
    """The store of the configured home (``MNIST_HITL_HOME``), or ``MNIST_HITL_DATABASE_URL``'s: the one place a
    process builds its store, which it then passes to whoever needs it."""
    return Store((settings or get_settings()).store_location)
