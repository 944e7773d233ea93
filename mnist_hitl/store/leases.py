"""Leases: a drawing the review queue hands to one reviewer is theirs for a while, so no one else is given it.

A lease is a row per prediction: who holds it and until when (seconds since the epoch). Taking one
is a single upsert per drawing that succeeds only when the drawing is free, its lease has ended,
or the reviewer holds it already (then it is renewed); the database decides, row by row, so two
reviewers asking at once, on one machine or on several sharing PostgreSQL, never both get a
drawing. The times are the asking process's clock: machines sharing a store keep their clocks in
step (NTP), as they must for the label times anyway.

A lease ends when its time runs out, when its reviewer gives it back (a skip), or when its reviewer
writes a label or an undo of the drawing: the store ends it in the label's own transaction, so a
drawing that label disputes reaches an adjudicator at once, whichever client wrote it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, text

from mnist_hitl.store.access import StoreAccess, database_errors
from mnist_hitl.store.rows import bounded, checked_reviewer

_TAKE = text(
    "INSERT INTO leases (prediction_id, reviewer, expires_at) VALUES (:id, :reviewer, :expires)"
    " ON CONFLICT (prediction_id) DO UPDATE SET reviewer = excluded.reviewer, expires_at = excluded.expires_at"
    " WHERE leases.reviewer = excluded.reviewer OR leases.expires_at <= :now"
    " RETURNING prediction_id"
)
_END = text("DELETE FROM leases WHERE prediction_id = :id AND reviewer = :reviewer")
_LABELLED_SINCE = text(
    "SELECT DISTINCT prediction_id FROM labels WHERE id > :after AND prediction_id IN :ids"
).bindparams(bindparam("ids", expanding=True))


class LeaseAccess(StoreAccess):
    """The store's leases (a base of :class:`~mnist_hitl.store.database.Store`)."""

    @database_errors
    def lease(self, prediction_ids: Iterable[int], reviewer: str, seconds: float) -> list[int]:
        """Lease drawings to ``reviewer`` for ``seconds``: those free, ended or theirs already (renewed).

        Returns:
            The ids now leased to ``reviewer``, in the order asked; the others are someone else's.
        """
        reviewer, now = checked_reviewer(reviewer), time.time()
        rows = [{"id": bounded(i), "reviewer": reviewer, "expires": now + seconds, "now": now} for i in prediction_ids]
        taken = []
        if rows:
            with self._transaction() as conn:
                for row in rows:
                    if conn.execute(_TAKE, row).first() is not None:
                        taken.append(row["id"])
        return taken

    @database_errors
    def leased_to_others(self, reviewer: str) -> set[int]:
        """The drawings someone other than ``reviewer`` holds a lease on now."""
        rows = self._all(
            "SELECT prediction_id FROM leases WHERE reviewer != :reviewer AND expires_at > :now",
            reviewer=checked_reviewer(reviewer),
            now=time.time(),
        )
        return {int(row["prediction_id"]) for row in rows}

    @database_errors
    def release(self, prediction_id: int, reviewer: str) -> bool:
        """End ``reviewer``'s lease on a drawing (a skip); True if they held one."""
        with self._transaction() as conn:
            return self._end_lease(conn, bounded(prediction_id), checked_reviewer(reviewer))

    @database_errors
    def newest_label_id(self) -> int:
        """The id of the newest label visible now (0 without any): what a lease taken later checks against."""
        return int(self._one("SELECT COALESCE(MAX(id), 0) AS n FROM labels")["n"])

    @database_errors
    def labelled_since(self, prediction_ids: Iterable[int], label_id: int) -> set[int]:
        """Those of ``prediction_ids`` given a label (of any kind, by anyone) with an id above ``label_id``.

        A reviewer's label ends their lease, so a drawing ranked for the queue just before someone labelled it can be
        leased just after: the queue checks what it leased with this and gives back what changed.
        """
        ids = sorted({bounded(pid) for pid in prediction_ids})
        if not ids:
            return set()
        with self._statement() as conn:
            return {int(row[0]) for row in conn.execute(_LABELLED_SINCE, {"after": bounded(label_id), "ids": ids})}

    def _end_lease(self, conn: Connection, prediction_id: int, reviewer: str) -> bool:
        """End ``reviewer``'s lease on a drawing inside the caller's transaction; True if they held one."""
        return conn.execute(_END, {"id": prediction_id, "reviewer": reviewer}).rowcount > 0
