"""Every label names its reviewer, on SQLite and on PostgreSQL; a store of version 3 migrates, its labels "unknown"."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time

import pytest
import sqlalchemy
from sqlalchemy import text

from mnist_hitl.store import SCHEMA_VERSION, UNKNOWN_REVIEWER, Store, StoreError
from mnist_hitl.store.rows import content_hash
from mnist_hitl.store.schema import HASH_FUNCTION, migration
from tests.integration.store.test_store import PNG, PROBS, sql


def test_a_label_keeps_its_reviewer_and_the_undo_its_own(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 4, "correct", reviewer="ada")
    store.add_label(prediction_id, 9, "confirm", reviewer="  grace ")
    _, undone = store.undo_label(prediction_id, reviewer="ada")
    assert undone.reviewer == "grace"
    history = [(label.kind, label.label, label.reviewer) for label in store.labels(prediction_id)]
    assert history == [("correct", 4, "ada"), ("confirm", 9, "grace"), ("undo", None, "ada")]
    store.add_label(prediction_id, 7, "correct")
    assert store.current_labels()[prediction_id].reviewer == UNKNOWN_REVIEWER
    ((_, latest),) = store.labelled_predictions()
    assert (latest.label, latest.reviewer) == (7, UNKNOWN_REVIEWER)


@pytest.mark.parametrize(
    ("reviewer", "message"),
    [("", "1-100 characters"), ("   ", "1-100 characters"), ("x" * 101, "1-100 characters"), ("a\nb", "printable")],
)
def test_a_bad_reviewer_name_is_refused_and_nothing_is_written(store, reviewer, message):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 9, "confirm", reviewer="ada")
    with pytest.raises(StoreError, match=message):
        store.add_label(prediction_id, 4, "correct", reviewer=reviewer)
    with pytest.raises(StoreError, match=message):
        store.undo_label(prediction_id, reviewer=reviewer)
    assert [label.reviewer for label in store.labels(prediction_id)] == ["ada"]


def test_the_database_refuses_an_empty_reviewer_from_any_client_and_labels_stay_append_only(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 9, "confirm", reviewer="ada")
    insert = (
        "INSERT INTO labels (prediction_id, label, kind, created_at, reviewer)"
        f" VALUES ({prediction_id}, 4, 'correct', 'forged', '')"
    )
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        sql(store, insert)
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        sql(store, "UPDATE labels SET reviewer = 'mallory'")
    assert [label.reviewer for label in store.labels(prediction_id)] == ["ada"]


def _version_3_sqlite(path) -> None:
    with sqlite3.connect(path, isolation_level=None) as old:
        old.create_function(HASH_FUNCTION, 1, content_hash, deterministic=True)
        for version in (1, 2, 3):
            for statement in migration(version, "sqlite"):
                old.execute(statement)
        old.execute("PRAGMA user_version = 3")
        old.execute(
            "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version, latency_ms)"
            " VALUES ('2026-01-01', x'00', 2, '[]', 'old', 1)"
        )
        old.execute("INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (1, 7, 'correct', 'then')")
    old.close()


def _version_3_postgresql(url: str) -> None:
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        for statement in migration(3, "postgresql"):
            connection.exec_driver_sql(statement)
        connection.execute(text("UPDATE store_schema SET version = 3"))
        connection.execute(
            text(
                "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version, latency_ms)"
                " VALUES ('2026-01-01', '\\x00', 2, '[]', 'old', 1)"
            )
        )
        connection.execute(
            text("INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (1, 7, 'correct', 'then')")
        )
    engine.dispose()


def test_a_version_3_store_migrates_in_place_and_its_labels_read_unknown(location):
    if location.startswith("postgresql"):
        _version_3_postgresql(location)
    else:
        _version_3_sqlite(location)
    with Store(location) as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        ((_, label),) = store.labelled_predictions()
        assert (label.id, label.label, label.created_at, label.reviewer) == (1, 7, "then", UNKNOWN_REVIEWER)
        store.add_label(1, 3, "correct", reviewer="ada")
    with Store(location) as again:  # opening a migrated store changes nothing
        assert [label.reviewer for label in again.labels(1)] == [UNKNOWN_REVIEWER, "ada"]
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
            sql(again, "DELETE FROM labels")


# leases ------------------------------------------------------------------------------------------------


def _reviewer(location: str, name: str, ids: list[int], start, results) -> None:
    with Store(location) as store:
        start.wait()
        results.put((name, store.lease(ids, name, 60)))


def test_four_reviewers_leasing_the_same_drawings_at_once_never_share_one(location):
    with Store(location) as store:
        ids = [store.record_prediction(PNG, 9, PROBS, "v1", 1.0) for _ in range(40)]
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(4), context.Queue()
    names = ["ada", "bob", "eve", "max"]
    processes = [context.Process(target=_reviewer, args=(location, n, ids, start, results)) for n in names]
    for process in processes:
        process.start()
    taken = dict(results.get(timeout=120) for _ in names)
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    every = [pid for name in names for pid in taken[name]]
    assert sorted(every) == ids  # each drawing leased once, none lost
    with Store(location) as store:
        holders = dict(sql(store, "SELECT prediction_id, reviewer FROM leases"))
        assert all(holders[pid] == name for name in names for pid in taken[name])


def test_a_lease_is_renewed_by_its_holder_released_on_a_skip_and_free_once_it_ends(store):
    first, second = (store.record_prediction(PNG, 9, PROBS, "v1", 1.0) for _ in range(2))
    assert store.lease([first, second], "ada", 60) == [first, second]
    assert store.lease([first, second], "bob", 60) == [] and store.leased_to_others("bob") == {first, second}
    assert store.lease([first], "ada", 60) == [first]  # renewed
    assert store.release(second, "bob") is False and store.release(second, "ada") is True
    assert store.lease([second], "bob", 0.001) == [second]
    time.sleep(0.01)  # bob's lease has ended
    assert store.leased_to_others("ada") == set() and store.lease([second], "ada", 60) == [second]
    with pytest.raises(StoreError, match="1-100 characters"):
        store.lease([first], " ", 60)


def test_a_label_or_an_undo_ends_its_writers_own_lease_on_that_drawing(store):
    first, second, third = (store.record_prediction(PNG, 9, PROBS, "v1", 1.0) for _ in range(3))
    assert store.lease([first, second, third], "ada", 60) == [first, second, third]
    store.add_label(first, 4, "correct", reviewer="bob")  # bob holds no lease: ada's stays
    assert store.leased_to_others("bob") == {first, second, third}
    store.add_label(first, 5, "correct", reviewer="ada")
    assert store.leased_to_others("bob") == {second, third}  # free for an adjudicator now
    assert store.lease([first], "ada", 60) == [first]  # taken back to decide again
    store.undo_label(first, reviewer="ada")
    store.add_label(second, 2, "adjudicate", reviewer="ada")
    assert store.leased_to_others("bob") == {third}
    assert store.lease([999_999], "ada", 60) == [999_999]  # leases do not check the drawing exists
    with pytest.raises(StoreError, match="no prediction with id 999999"):
        store.add_label(999_999, 1, "correct", reviewer="ada")
    assert store.leased_to_others("bob") == {third, 999_999}  # a refused label ends nothing
