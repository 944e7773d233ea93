"""The store: predictions, append-only labels, model versions, the loop's watermarks, the queue's score cache.

One :class:`Store` per process, opened by an entry point (:func:`open_store`) and passed to whoever
needs it. SQLite by default, PostgreSQL with ``MNIST_HITL_DATABASE_URL``; the same rules on both,
held by the database itself (:mod:`.schema`).
"""

from mnist_hitl.names import ADJUDICATE, IMPORT, LABEL_KINDS, UNDO
from mnist_hitl.store.database import Store, open_store
from mnist_hitl.store.errors import DuplicateError, StoreError
from mnist_hitl.store.rows import MAX_ID, Label, NewPrediction, Prediction, content_hash
from mnist_hitl.store.schema import SCHEMA_VERSION, UNKNOWN_REVIEWER

__all__ = [
    "ADJUDICATE",
    "IMPORT",
    "LABEL_KINDS",
    "MAX_ID",
    "SCHEMA_VERSION",
    "UNDO",
    "UNKNOWN_REVIEWER",
    "DuplicateError",
    "Label",
    "NewPrediction",
    "Prediction",
    "Store",
    "StoreError",
    "content_hash",
    "open_store",
]
