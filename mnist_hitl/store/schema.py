"""The store's schema, version by version; :mod:`mnist_hitl.store.access` applies what a store lacks.

Version 1: the tables, labels append-only against UPDATE and DELETE. Version 2 makes the
rules hold for every connection, whatever its pragmas: ``INSERT OR REPLACE`` deletes the old
row without firing a DELETE trigger unless ``recursive_triggers`` is on, so a label could be
overwritten and its time forged; predictions could be updated or deleted, orphaning their
labels on a connection with ``foreign_keys`` off. Version 3 adds the pool and the review queue: a
content hash on predictions (one stored copy of an imported picture), a label kind ``undo`` that
carries no digit (the labels table is rebuilt for its CHECK, which SQLite cannot alter; its
triggers come back with it), and ``scores``, a cache of the deployed model's probabilities per
prediction and model version. A migration only adds: a version's SQL is never edited once
released, since stores in use were made with it. Version 4 records who gave each label: a
``reviewer`` on every label, ``'unknown'`` for the labels given before (adding a column with a
default rewrites no row, so the append-only triggers stay as they are), and ``leases``: which
reviewer the review queue handed a drawing to, until when (:mod:`mnist_hitl.store.leases`). Version 5
adds the label kind ``adjudicate``: a digit decided for a drawing whose reviewers disagree
(:mod:`mnist_hitl.workbench.adjudication`), a label like the others, kept apart by its kind so that the
history says a disagreement was settled. SQLite rebuilds the labels table again for its CHECK;
PostgreSQL replaces the constraint.

PostgreSQL stores start at version 3, in one step (:data:`POSTGRES_MIGRATIONS`): the same
tables and the same rules. Ids are ``GENERATED ALWAYS`` (an explicit id, the REPLACE of
SQLite, is refused), and row and ``TRUNCATE`` triggers refuse every change to a label or a
prediction. Foreign keys always hold there. The version is a row of ``store_schema`` (SQLite
keeps it in ``PRAGMA user_version``). A later version adds its statements to both
dictionaries under one number: one history, two spellings. Alembic would version the same
few statements with more machinery, and could not express SQLite's table rebuilds any better.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

SCHEMA_VERSION = 5
UNKNOWN_REVIEWER = "unknown"  # the reviewer of a label given before version 4
HASH_FUNCTION = "mnist_hitl_sha256"  # registered on the connection that migrates to v3

_SCHEMA_V1 = """
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
# In a BEFORE INSERT trigger NEW.id is -1 (or NULL) when SQLite picks the id, so "an existing id"
# means a REPLACE; ids below 1 are refused after the insert, so no row ever has id -1.
_SCHEMA_V2 = """
CREATE TRIGGER IF NOT EXISTS predictions_no_update BEFORE UPDATE ON predictions
BEGIN SELECT RAISE(ABORT, 'predictions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS predictions_no_delete BEFORE DELETE ON predictions
BEGIN SELECT RAISE(ABORT, 'predictions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS predictions_no_replace BEFORE INSERT ON predictions
WHEN NEW.id >= 1 AND EXISTS (SELECT 1 FROM predictions WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'predictions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS predictions_positive_id AFTER INSERT ON predictions WHEN NEW.id < 1
BEGIN SELECT RAISE(ABORT, 'prediction ids start at 1'); END;
CREATE TRIGGER IF NOT EXISTS labels_no_replace BEFORE INSERT ON labels
WHEN NEW.id >= 1 AND EXISTS (SELECT 1 FROM labels WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TRIGGER IF NOT EXISTS labels_positive_id AFTER INSERT ON labels WHEN NEW.id < 1
BEGIN SELECT RAISE(ABORT, 'label ids start at 1'); END;
CREATE TRIGGER IF NOT EXISTS labels_need_a_prediction BEFORE INSERT ON labels
WHEN NOT EXISTS (SELECT 1 FROM predictions WHERE id = NEW.prediction_id)
BEGIN SELECT RAISE(ABORT, 'a label needs an existing prediction'); END;
"""
# A rebuilt labels table gets back its index and the triggers that keep it append-only (SQLite).
_LABELS_REBUILT = """CREATE INDEX labels_by_prediction ON labels(prediction_id, id);
CREATE TRIGGER labels_no_update BEFORE UPDATE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TRIGGER labels_no_delete BEFORE DELETE ON labels
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TRIGGER labels_no_replace BEFORE INSERT ON labels
WHEN NEW.id >= 1 AND EXISTS (SELECT 1 FROM labels WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'labels are append-only'); END;
CREATE TRIGGER labels_positive_id AFTER INSERT ON labels WHEN NEW.id < 1
BEGIN SELECT RAISE(ABORT, 'label ids start at 1'); END;
CREATE TRIGGER labels_need_a_prediction BEFORE INSERT ON labels
WHEN NOT EXISTS (SELECT 1 FROM predictions WHERE id = NEW.prediction_id)
BEGIN SELECT RAISE(ABORT, 'a label needs an existing prediction'); END;
"""
# Existing rows get their hash while the no-update trigger is away, inside the migration's one
# write transaction. DROP TABLE fires no DELETE trigger; labels keep their ids (AUTOINCREMENT
# continues from the highest, as no label is ever deleted).
_SCHEMA_V3 = f"""
ALTER TABLE predictions ADD COLUMN content_hash TEXT;
DROP TRIGGER predictions_no_update;
UPDATE predictions SET content_hash = {HASH_FUNCTION}(png);
CREATE TRIGGER predictions_no_update BEFORE UPDATE ON predictions
BEGIN SELECT RAISE(ABORT, 'predictions are immutable'); END;
CREATE UNIQUE INDEX predictions_import_hash ON predictions(content_hash) WHERE source = 'import';
CREATE TABLE labels_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id INTEGER NOT NULL REFERENCES predictions(id),
    label INTEGER CHECK (label BETWEEN 0 AND 9),
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct', 'undo')),
    created_at TEXT NOT NULL,
    CHECK ((kind = 'undo') = (label IS NULL))
);
INSERT INTO labels_v3 (id, prediction_id, label, kind, created_at)
SELECT id, prediction_id, label, kind, created_at FROM labels ORDER BY id;
DROP TABLE labels;
ALTER TABLE labels_v3 RENAME TO labels;
{_LABELS_REBUILT}CREATE TABLE scores (
    model_version TEXT NOT NULL,
    prediction_id INTEGER NOT NULL,
    probabilities BLOB NOT NULL,
    PRIMARY KEY (model_version, prediction_id)
) WITHOUT ROWID;
"""
# The same statements on both databases; the CHECK holds every client to a name of 1-100 characters.
_REVIEWERS_V4 = f"""
ALTER TABLE labels ADD COLUMN reviewer TEXT NOT NULL DEFAULT '{UNKNOWN_REVIEWER}'
    CHECK (length(reviewer) BETWEEN 1 AND 100);
CREATE TABLE leases (
    prediction_id BIGINT PRIMARY KEY,
    reviewer TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""
# The rebuild of version 3 with the reviewer of version 4 and one more kind; the ids, times and reviewers stay.
_ADJUDICATE_V5 = f"""
CREATE TABLE labels_v5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prediction_id INTEGER NOT NULL REFERENCES predictions(id),
    label INTEGER CHECK (label BETWEEN 0 AND 9),
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct', 'adjudicate', 'undo')),
    created_at TEXT NOT NULL,
    reviewer TEXT NOT NULL DEFAULT '{UNKNOWN_REVIEWER}' CHECK (length(reviewer) BETWEEN 1 AND 100),
    CHECK ((kind = 'undo') = (label IS NULL))
);
INSERT INTO labels_v5 (id, prediction_id, label, kind, created_at, reviewer)
SELECT id, prediction_id, label, kind, created_at, reviewer FROM labels ORDER BY id;
DROP TABLE labels;
ALTER TABLE labels_v5 RENAME TO labels;
{_LABELS_REBUILT}"""
_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _REVIEWERS_V4, 5: _ADJUDICATE_V5}


_POSTGRES_V3 = """
CREATE TABLE store_schema (version INTEGER NOT NULL);
INSERT INTO store_schema (version) VALUES (0);
CREATE TABLE predictions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at TEXT NOT NULL,
    png BYTEA NOT NULL,
    predicted_label INTEGER NOT NULL CHECK (predicted_label BETWEEN 0 AND 9),
    probabilities TEXT NOT NULL,
    model_version TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL DEFAULT 'app',
    content_hash TEXT
);
CREATE UNIQUE INDEX predictions_import_hash ON predictions(content_hash) WHERE source = 'import';
CREATE TABLE labels (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prediction_id BIGINT NOT NULL REFERENCES predictions(id),
    label INTEGER CHECK (label BETWEEN 0 AND 9),
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct', 'undo')),
    created_at TEXT NOT NULL,
    CHECK ((kind = 'undo') = (label IS NULL))
);
CREATE INDEX labels_by_prediction ON labels(prediction_id, id);
CREATE FUNCTION mnist_hitl_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], ERRCODE = 'integrity_constraint_violation'; END $$;
CREATE TRIGGER labels_append_only BEFORE UPDATE OR DELETE ON labels
FOR EACH ROW EXECUTE FUNCTION mnist_hitl_refuse('labels are append-only');
CREATE TRIGGER labels_no_truncate BEFORE TRUNCATE ON labels
FOR EACH STATEMENT EXECUTE FUNCTION mnist_hitl_refuse('labels are append-only');
CREATE TRIGGER predictions_immutable BEFORE UPDATE OR DELETE ON predictions
FOR EACH ROW EXECUTE FUNCTION mnist_hitl_refuse('predictions are immutable');
CREATE TRIGGER predictions_no_truncate BEFORE TRUNCATE ON predictions
FOR EACH STATEMENT EXECUTE FUNCTION mnist_hitl_refuse('predictions are immutable');
CREATE TABLE model_versions (
    version TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    holdout_accuracy DOUBLE PRECISION,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'candidate' CHECK (status IN ('candidate', 'deployed', 'rejected')),
    deployed_at TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE scores (
    model_version TEXT NOT NULL,
    prediction_id BIGINT NOT NULL,
    probabilities BYTEA NOT NULL,
    PRIMARY KEY (model_version, prediction_id)
);
"""
# The CHECK of version 3's kind column, under the name PostgreSQL gave it, replaced (every row is checked again).
_POSTGRES_ADJUDICATE_V5 = """
ALTER TABLE labels DROP CONSTRAINT labels_kind_check;
ALTER TABLE labels ADD CONSTRAINT labels_kind_check CHECK (kind IN ('confirm', 'correct', 'adjudicate', 'undo'));
"""
POSTGRES_MIGRATIONS = {3: _POSTGRES_V3, 4: _REVIEWERS_V4, 5: _POSTGRES_ADJUDICATE_V5}


def migration(version: int, dialect: str = "sqlite") -> list[str]:
    """The statements that bring a store of ``version - 1`` (0: a new, empty one) to ``version``.

    On PostgreSQL, version 3 is the first: it creates everything from nothing.
    """
    source = _MIGRATIONS if dialect == "sqlite" else POSTGRES_MIGRATIONS
    if version not in source:
        return []
    return [statement for statement in source[version].split(";\n") if statement.strip()]


def read_schema_version(conn: Connection, dialect: str) -> int:
    """The schema version of the store ``conn`` is on (0: a new, empty one)."""
    if dialect == "sqlite":
        return conn.exec_driver_sql("PRAGMA user_version").scalar_one()
    if conn.execute(text("SELECT to_regclass('store_schema')")).scalar_one() is None:
        return 0  # an empty database
    return conn.execute(text("SELECT version FROM store_schema")).scalar_one()
