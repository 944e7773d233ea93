"""How far the loop has got, kept in the store's meta table.

``seen_through`` is the newest label the last completed cycle looked at;
``retrained_through`` the newest label the last retraining used. They advance
only when a cycle completes, so a cycle that dies counts its labels again next time.
"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_hitl.clock import utc_now
from mnist_hitl.store import Store

RETRAINED_THROUGH = "loop.retrained_through_label_id"
SEEN_THROUGH = "loop.seen_through_label_id"
LAST_RETRAIN_AT = "loop.last_retrain_at"


@dataclass(frozen=True)
class Watermarks:
    retrained_through: int  # newest label id used by the last retraining
    seen_through: int  # newest label id looked at by the last completed cycle
    last_retrain_at: str | None


def watermarks(store: Store) -> Watermarks:
    return Watermarks(
        int(store.get_meta(RETRAINED_THROUGH, "0")),
        int(store.get_meta(SEEN_THROUGH, "0")),
        store.get_meta(LAST_RETRAIN_AT),
    )


def newest_label_id(store: Store) -> int:
    return store.newest_label_id()


def advance_watermarks(store: Store, seen_through: int, retrained_through: int | None = None) -> Watermarks:
    """Move the watermarks forward (never back); ``retrained_through`` only after a retraining."""
    current = watermarks(store)
    store.set_meta(SEEN_THROUGH, str(max(current.seen_through, seen_through)))
    if retrained_through is not None:
        store.set_meta(RETRAINED_THROUGH, str(max(current.retrained_through, retrained_through)))
        store.set_meta(LAST_RETRAIN_AT, utc_now())
    return watermarks(store)
