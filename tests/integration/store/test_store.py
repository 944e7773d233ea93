"""The store, on SQLite and on PostgreSQL: round trips, append-only labels, refusals, concurrent writers.

Every test runs against both: the embedded SQLite file and a real PostgreSQL 15 server
(``postgres`` in conftest.py).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import fields, replace

import pytest
import sqlalchemy
from sqlalchemy import text

from mnist_hitl.store import SCHEMA_VERSION, NewPrediction, Prediction, Store, StoreError
from mnist_hitl.store.rows import PREDICTION_COLUMNS

PNG = b"\x89PNG fake but non-empty"
PROBS = [0.01] * 9 + [0.91]


def sql(store: Store, statement: str) -> list[tuple]:
    """Run SQL on a connection of the store's own, past its methods (as any other client could)."""
    with store.engine.begin() as connection:
        result = connection.execute(text(statement))
        return [tuple(row) for row in result] if result.returns_rows else []


def test_prediction_round_trip(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.5, source="cli")
    stored = store.get_prediction(prediction_id)
    assert (stored.png, stored.predicted_label, stored.model_version, stored.source) == (PNG, 9, "v1", "cli")
    assert stored.probabilities == pytest.approx(PROBS)
    assert stored.latency_ms == 1.5 and stored.created_at.endswith("+00:00")


def test_a_predictions_fields_are_the_tables_columns(store):
    """One list of fields (NewPrediction): the table, the stored record and what a caller gives agree."""
    columns = {column["name"] for column in sqlalchemy.inspect(store.engine).get_columns("predictions")}
    assert columns == {"id", *PREDICTION_COLUMNS}
    assert {field.name for field in fields(Prediction)} == columns - {"content_hash"}
    first = store.get_prediction(store.record_prediction(PNG, 9, PROBS, "v1", 1.5, source="cli"))
    again = store.record_prediction(**{field.name: getattr(first, field.name) for field in fields(NewPrediction)})
    assert store.get_prediction(again) == replace(first, id=again, created_at=store.get_prediction(again).created_at)


def test_store_has_the_schema_version_and_sqlite_is_wal(store):
    assert store.schema_version == SCHEMA_VERSION
    if store.dialect == "sqlite":
        assert sql(store, "PRAGMA journal_mode") == [("wal",)]


def test_opening_a_store_again_keeps_its_rows(location):
    with Store(location) as first:
        prediction_id = first.record_prediction(PNG, 3, PROBS, "v1", 1.0)
        first.add_label(prediction_id, 3, "confirm")
    with Store(location) as again:
        assert again.schema_version == SCHEMA_VERSION
        assert again.counts() == {
            "predictions": 1,
            "labels": 1,
            "confirmations": 1,
            "corrections": 0,
            "labelled_predictions": 1,
        }


def test_a_later_correction_never_erases_an_earlier_label(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 9, "confirm")
    store.add_label(prediction_id, 4, "correct")
    history = store.labels(prediction_id)
    assert [(label.label, label.kind) for label in history] == [(9, "confirm"), (4, "correct")]
    (latest,) = store.labelled_predictions()
    assert latest[1].label == 4
    for statement in ("UPDATE labels SET label = 1", "DELETE FROM labels"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
            sql(store, statement)
    assert len(store.labels(prediction_id)) == 2


def test_no_client_can_overwrite_a_label_by_inserting_over_its_id(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    label_id = store.add_label(prediction_id, 4, "correct")
    columns = "labels (id, prediction_id, label, kind, created_at)"
    values = f"VALUES ({label_id}, {prediction_id}, 1, 'correct', 'forged')"
    overwrite = {  # each database's way to write over an existing row
        "sqlite": f"INSERT OR REPLACE INTO {columns} {values}",
        "postgresql": f"INSERT INTO {columns} OVERRIDING SYSTEM VALUE {values}"
        " ON CONFLICT (id) DO UPDATE SET label = excluded.label",
    }[store.dialect]
    for statement in (f"INSERT INTO {columns} {values}", overwrite):
        with pytest.raises(sqlalchemy.exc.DatabaseError):
            sql(store, statement)
    (kept,) = store.labels(prediction_id)
    assert (kept.id, kept.label, kept.created_at) != (label_id, 1, "forged") and kept.label == 4


def test_predictions_are_immutable_for_every_client(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    for statement in ("UPDATE predictions SET predicted_label = 1", "DELETE FROM predictions"):
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="immutable"):
            sql(store, statement)
    assert store.get_prediction(prediction_id).predicted_label == 9


def test_undo_makes_a_prediction_unlabelled_and_keeps_its_history(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 4, "correct")
    undo_id, undone = store.undo_label(prediction_id)
    assert undone.label == 4 and undo_id > undone.id
    assert store.labelled_predictions() == [] and store.current_labels() == {}
    with pytest.raises(StoreError, match="no label to undo"):
        store.undo_label(prediction_id)
    assert [label.kind for label in store.labels(prediction_id)] == ["correct", "undo"]


def test_an_imported_picture_is_stored_once(store):
    from mnist_hitl.store import IMPORT, DuplicateError

    first = store.record_prediction(PNG, 1, PROBS, "v1", 1.0, source=IMPORT)
    with pytest.raises(DuplicateError) as refused:
        store.record_prediction(PNG, 1, PROBS, "v1", 1.0, source=IMPORT)
    assert refused.value.prediction_id == first and store.counts()["predictions"] == 1
    store.record_prediction(PNG, 1, PROBS, "v1", 1.0)  # a drawing that looks the same is a new prediction


def test_score_cache_and_pictures(store):
    ids = [store.record_prediction(PNG + bytes([i]), 1, PROBS, "v1", 1.0, source=f"s{i}") for i in range(3)]
    store.save_scores("v2", [(ids[0], b"\x00\x01")])
    store.save_scores("v2", [(ids[0], b"\x09"), (ids[1], b"\x02")])  # a cached score is kept
    cached = {row[0]: row[1:] for row in store.cached_scores("v2")}
    assert cached == {ids[0]: (b"\x00\x01", None), ids[1]: (b"\x02", None), ids[2]: (None, None)}
    assert store.cached_scores("v1")[0][2] is not None  # v1 made it: its own probabilities
    store.save_scores("v3", [])
    assert all(row[1] is None for row in store.cached_scores("v2"))  # other versions' scores dropped
    pictures = store.pictures([ids[2], ids[0], 10**30])
    assert pictures == {ids[2]: (PNG + b"\x02", "s2"), ids[0]: (PNG + b"\x00", "s0")}


@pytest.mark.parametrize(
    "prediction,label,kind,message",
    [
        ("known", 10, "correct", "outside 0-9"),
        ("known", -1, "correct", "outside 0-9"),
        ("known", 3.5, "correct", "not a digit"),
        ("known", "7", "correct", "not a digit"),
        ("known", 3, "guess", "kind"),
        (424242, 3, "correct", "no prediction with id 424242"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(store, prediction, label, kind, message):
    prediction_id = store.record_prediction(PNG, 1, PROBS, "v1", 1.0) if prediction == "known" else prediction
    before = store.counts()
    with pytest.raises(StoreError, match=message):
        store.add_label(prediction_id, label, kind)
    assert store.counts() == before


def test_bad_predictions_are_refused(store):
    with pytest.raises(StoreError, match="10 probabilities"):
        store.record_prediction(PNG, 1, [1.0], "v1", 1.0)
    with pytest.raises(StoreError, match="outside 0-9"):
        store.record_prediction(PNG, 11, PROBS, "v1", 1.0)
    with pytest.raises(StoreError, match="unknown|no prediction"):
        store.get_prediction(99)
    assert store.counts()["predictions"] == 0


def test_labelled_predictions_since_a_watermark(store):
    ids = [store.record_prediction(PNG, 1, PROBS, "v1", 1.0) for _ in range(3)]
    first = store.add_label(ids[0], 1, "confirm")
    store.add_label(ids[1], 2, "correct")
    assert [p.id for p, _ in store.labelled_predictions(since_label_id=first)] == [ids[1]]
    store.add_label(ids[0], 7, "correct")  # relabelled after the watermark: counts again, with its new label
    relabelled = store.labelled_predictions(since_label_id=first)
    assert [(p.id, label.label) for p, label in relabelled] == [(ids[1], 2), (ids[0], 7)]


def test_model_versions_and_meta(store):
    store.record_model_version("v1", "model_v1.keras", 0.98, status="deployed")
    store.record_model_version("v2", "model_v2.keras", 0.97, status="rejected", details={"why": "worse"})
    versions = {row["version"]: row for row in store.model_versions()}
    assert versions["v1"]["status"] == "deployed" and versions["v1"]["deployed_at"]
    assert versions["v2"]["details"] == {"why": "worse"} and versions["v2"]["deployed_at"] is None
    store.set_meta("watermark", "5")
    store.set_meta("watermark", "8")
    assert store.get_meta("watermark") == "8" and store.get_meta("missing", "0") == "0"


def _writer(path: str, worker: int, rounds: int) -> None:
    with Store(path) as store:
        for i in range(rounds):
            prediction_id = store.record_prediction(PNG, worker % 10, PROBS, f"w{worker}", float(i))
            store.add_label(prediction_id, (worker + i) % 10, "correct" if i % 2 else "confirm")


def test_concurrent_writers_from_several_processes_lose_nothing(location):
    Store(location).close()
    workers, rounds = 6, 60
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(location, w, rounds)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    with Store(location) as store:
        counts = store.counts()
        assert counts["predictions"] == counts["labels"] == workers * rounds
        per_worker = sql(store, "SELECT model_version, COUNT(*) FROM predictions GROUP BY 1")
        assert sorted(n for _, n in per_worker) == [rounds] * workers


def test_a_writer_killed_mid_transaction_leaves_the_store_whole(location):
    with Store(location) as store:
        store.record_prediction(PNG, 1, PROBS, "v1", 1.0)
    killed = multiprocessing.get_context("spawn").Process(target=_hold_transaction_and_die, args=(location,))
    killed.start()
    killed.join(60)
    assert killed.exitcode == 3
    with Store(location, timeout=10) as store:
        assert store.counts()["predictions"] == 1
        if store.dialect == "sqlite":
            assert sql(store, "PRAGMA integrity_check") == [("ok",)]
        store.record_prediction(PNG, 2, PROBS, "v1", 1.0)  # and the lock is gone
        assert store.counts()["predictions"] == 2


def _hold_transaction_and_die(location: str) -> None:
    import os

    store = Store(location)
    with store._transaction() as connection:  # the write lock, and a row not yet committed
        connection.execute(
            text(
                "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version, latency_ms)"
                " VALUES ('x', :png, 1, '[]', 'v', 1)"
            ),
            {"png": b"\x00"},
        )
        os._exit(3)
