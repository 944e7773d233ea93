"""Through a real store, SQLite and PostgreSQL: a disputed drawing reaches no training data until an adjudication
decides it, an unreviewed suspect is set aside, and a store of version 4 learns the kind ``adjudicate``."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy
from sqlalchemy import text

from mnist_hitl.learning.monitor.decision import Thresholds
from mnist_hitl.learning.monitor.monitoring import monitor
from mnist_hitl.learning.retrain.labels import retraining_labels, training_data
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import ADJUDICATE, SCHEMA_VERSION, Store, StoreError
from mnist_hitl.store.rows import content_hash
from mnist_hitl.store.schema import HASH_FUNCTION, migration
from mnist_hitl.workbench.adjudication import adjudication_queue
from mnist_hitl.workbench.suspects import Suspect, record_judged_suspects, record_suspects, stored_suspects
from tests.integration.store.test_store import PROBS, sql


def drawings(store: Store, count: int) -> list[int]:
    rng = np.random.default_rng(0)
    return [
        store.record_prediction(encode_png(rng.integers(0, 256, (28, 28), dtype=np.uint8)), 9, PROBS, "v1", 1.0)
        for _ in range(count)
    ]


def mnist(count: int = 30) -> SimpleNamespace:
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:10], y_test=y[:10])


def newest(store: Store) -> int:
    return max(label.id for label in store.labels())


def test_a_disputed_drawing_reaches_no_training_data_until_an_adjudication_decides_it(store, home):
    disputed, agreed, single = drawings(store, 3)
    store.add_label(disputed, 3, "correct", reviewer="ada")
    store.add_label(disputed, 5, "correct", reviewer="bob")
    store.add_label(agreed, 7, "correct", reviewer="ada")
    store.add_label(agreed, 7, "confirm", reviewer="bob")
    store.add_label(single, 2, "correct", reviewer="ada")
    through = newest(store)

    labels, held = retraining_labels(store, through)
    assert sorted(labels.prediction_ids.tolist()) == [agreed, single] and held.disputed == {disputed}
    data = training_data(home, mnist(), labels, 3, through, 0, held_out=held)
    assert data.sizes()["users_labels"] == 2 and data.sizes()["users_disputed_held_out"] == 1
    assert disputed not in data.users_train.prediction_ids and disputed not in data.users_heldout.prediction_ids

    decision = store.add_label(disputed, 5, ADJUDICATE, reviewer="eve")
    assert store.labels(disputed)[-1].kind == ADJUDICATE
    labels, _ = retraining_labels(store, through)  # a cycle that read up to before the decision
    assert disputed not in labels.prediction_ids
    labels, held = retraining_labels(store, decision)
    assert len(held) == 0
    position = labels.prediction_ids.tolist().index(disputed)
    assert (labels.y[position], labels.label_ids[position]) == (5, decision)  # the decided label trains and judges


def test_the_monitor_counts_no_disputed_label_among_the_new_labels(store, home, tmp_path):
    disputed, agreed = drawings(store, 2)
    store.add_label(disputed, 3, "correct", reviewer="ada")
    store.add_label(disputed, 5, "correct", reviewer="bob")
    store.add_label(agreed, 7, "correct", reviewer="ada")
    result = monitor(home, store, 0, newest(store), Thresholds(2, 0.1, 1), tmp_path)
    assert result.new_labels == 1 and result.class_counts[7] == 1 and sum(result.class_counts.values()) == 1
    assert not result.decision.retrain and result.decision.reasons[0].startswith("1 new labels")
    store.add_label(disputed, 5, ADJUDICATE, reviewer="eve")  # decided: it counts now
    assert monitor(home, store, 0, newest(store), Thresholds(2, 0.1, 1), tmp_path).new_labels == 2


def test_a_suspect_label_is_set_aside_until_someone_labels_its_drawing_again(store):
    flagged, other = drawings(store, 2)
    label_id = store.add_label(flagged, 4, "correct", reviewer="ada")
    store.add_label(other, 1, "correct", reviewer="ada")
    labels, held = retraining_labels(store, newest(store))
    assert len(labels) == 2 and len(held) == 0  # no suspect stored: everything as before
    record_suspects(store, [Suspect(flagged, label_id, 4, "ada", 9, 0.9, 0.05, PROBS)], "v2", "test")
    labels, held = retraining_labels(store, newest(store))
    assert labels.prediction_ids.tolist() == [other] and held.suspects == {flagged}
    store.add_label(flagged, 4, "confirm", reviewer="bob")  # looked at again: the same digit
    labels, held = retraining_labels(store, newest(store))
    assert sorted(labels.prediction_ids.tolist()) == [flagged, other] and len(held) == 0


def sure_of(digit: int, p: float) -> list[float]:
    return [p if d == digit else (1 - p) / 9 for d in range(10)]


def test_a_label_flagged_again_after_someone_looked_again_is_not_set_aside_twice(store):
    drawing, *others = drawings(store, 41)
    first = store.add_label(drawing, 0, "correct", reviewer="ada")
    record_suspects(store, [Suspect(drawing, first, 0, "ada", 3, 0.95, 0.01, sure_of(3, 0.95))], "c1", "c1")
    assert retraining_labels(store, newest(store))[1].suspects == {drawing}
    again = store.add_label(drawing, 0, "confirm", reviewer="bob")  # bob looked: it is a 0
    label_ids = [again] + [store.add_label(pid, i % 10, "correct", reviewer="ada") for i, pid in enumerate(others, 1)]
    # The next cycle's models still read it as a 3, and every other drawing as labelled.
    probabilities = np.array([sure_of(3, 0.95)] + [sure_of(i % 10, 0.95) for i in range(1, 41)])
    (found,) = record_judged_suspects(store, label_ids, probabilities, "c2", "c2")
    assert (found.prediction_id, found.label_id, found.looked_again) == (drawing, again, True)
    assert [s.looked_again for s in stored_suspects(store)[0]] == [True]
    labels, held = retraining_labels(store, newest(store))
    assert drawing in labels.prediction_ids and len(held) == 0


class Scores:
    """The deployed model's scores as the queue reads them (a ScoreCache without a model)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = np.array(ids, dtype=np.int64)

    def current(self):
        return "v1", self.ids, np.tile(np.array(PROBS, dtype=np.float32), (len(self.ids), 1))


def test_the_adjudication_queue_shows_the_competing_labels_oldest_dispute_first(store):
    first, second, agreed = drawings(store, 3)
    store.add_label(second, 1, "correct", reviewer="ada")
    store.add_label(first, 3, "correct", reviewer="ada")
    store.add_label(first, 5, "correct", reviewer="bob")
    store.add_label(second, 7, "correct", reviewer="bob")
    store.add_label(agreed, 2, "correct", reviewer="ada")
    cache = Scores([first, second, agreed])
    items = adjudication_queue(store, cache, 10)
    assert [item.prediction_id for item in items] == [first, second]
    assert "3 by ada" in items[0].reason and "5 by bob" in items[0].reason
    assert [item.prediction_id for item in adjudication_queue(store, cache, 10, exclude=[first])] == [second]
    assert adjudication_queue(store, cache, 0) == []
    store.add_label(first, 3, ADJUDICATE, reviewer="eve")
    assert [item.prediction_id for item in adjudication_queue(store, cache, 10)] == [second]


def test_the_database_holds_every_client_to_the_kinds_and_an_adjudication_to_a_digit(store):
    (prediction_id,) = drawings(store, 1)
    store.add_label(prediction_id, 3, ADJUDICATE, reviewer="eve")
    insert = "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES ({}, {}, '{}', 'forged')"
    for label, kind in (("NULL", ADJUDICATE), (3, "overrule")):
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            sql(store, insert.format(prediction_id, label, kind))
    with pytest.raises(StoreError, match="is not one of confirm, correct, adjudicate"):
        store.add_label(prediction_id, 3, "overrule")
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        sql(store, "UPDATE labels SET kind = 'correct'")
    assert [label.kind for label in store.labels(prediction_id)] == [ADJUDICATE]


def _version_4(location: str) -> None:
    """A store made by the code of version 4, with one prediction and one label of a named reviewer."""
    insert_prediction = (
        "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version, latency_ms)"
        " VALUES ('2026-01-01', {}, 2, '[]', 'old', 1)"
    )
    insert_label = (
        "INSERT INTO labels (prediction_id, label, kind, created_at, reviewer) VALUES (1, 7, 'correct', 'then', 'ada')"
    )
    if not location.startswith("postgresql"):
        with sqlite3.connect(location, isolation_level=None) as old:
            old.create_function(HASH_FUNCTION, 1, content_hash, deterministic=True)
            for version in (1, 2, 3, 4):
                for statement in migration(version, "sqlite"):
                    old.execute(statement)
            old.execute("PRAGMA user_version = 4")
            old.execute(insert_prediction.format("x'00'"))
            old.execute(insert_label)
        old.close()
        return
    engine = sqlalchemy.create_engine(location)
    with engine.begin() as connection:
        for version in (3, 4):
            for statement in migration(version, "postgresql"):
                connection.exec_driver_sql(statement)
        connection.execute(text("UPDATE store_schema SET version = 4"))
        connection.execute(text(insert_prediction.format("'\\x00'")))
        connection.execute(text(insert_label))
    engine.dispose()


def test_a_version_4_store_migrates_in_place_keeping_its_labels_and_rules(location):
    _version_4(location)
    with Store(location) as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        ((_, label),) = store.labelled_predictions()
        assert (label.id, label.label, label.kind, label.created_at, label.reviewer) == (1, 7, "correct", "then", "ada")
        assert store.add_label(1, 3, ADJUDICATE, reviewer="eve") == 2  # ids carry on
    with Store(location) as again:  # opening a migrated store changes nothing
        assert [(label.kind, label.reviewer) for label in again.labels(1)] == [("correct", "ada"), (ADJUDICATE, "eve")]
        with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
            sql(again, "DELETE FROM labels")
        with pytest.raises(sqlalchemy.exc.IntegrityError):
            sql(
                again,
                "INSERT INTO labels (prediction_id, label, kind, created_at, reviewer) VALUES (1, 3, 'x', 't', '')",
            )
