"""The SQLite store: round trips, append-only labels, refusals, concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from mnist_hitl.store import SCHEMA_VERSION, Store, StoreError

PNG = b"\x89PNG fake but non-empty"
PROBS = [0.01] * 9 + [0.91]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.sqlite") as opened:
        yield opened


def test_prediction_round_trip(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.5, source="cli")
    stored = store.get_prediction(prediction_id)
    assert (stored.png, stored.predicted_label, stored.model_version, stored.source) == (PNG, 9, "v1", "cli")
    assert stored.probabilities == pytest.approx(PROBS)
    assert stored.latency_ms == 1.5 and stored.created_at.endswith("+00:00")


def test_store_is_wal_with_a_schema_version(store):
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION


def test_a_later_correction_never_erases_an_earlier_label(store):
    prediction_id = store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    store.add_label(prediction_id, 9, "confirm")
    store.add_label(prediction_id, 4, "correct")
    history = store.labels(prediction_id)
    assert [(label.label, label.kind) for label in history] == [(9, "confirm"), (4, "correct")]
    (latest,) = store.labelled_predictions()
    assert latest[1].label == 4
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("UPDATE labels SET label = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._conn.execute("DELETE FROM labels")


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


def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "store.sqlite")
    Store(path).close()
    workers, rounds = 6, 60
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(path, w, rounds)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    with Store(path) as store:
        counts = store.counts()
        assert counts["predictions"] == counts["labels"] == workers * rounds
        per_worker = store._conn.execute("SELECT model_version, COUNT(*) FROM predictions GROUP BY 1").fetchall()
        assert sorted(n for _, n in per_worker) == [rounds] * workers


def test_a_writer_killed_mid_transaction_leaves_the_store_whole(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        store.record_prediction(PNG, 1, PROBS, "v1", 1.0)
    killed = multiprocessing.get_context("spawn").Process(target=_hold_transaction_and_die, args=(str(path),))
    killed.start()
    killed.join(60)
    assert killed.exitcode != 0
    with Store(path) as store:
        assert store.counts()["predictions"] == 1
        assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.record_prediction(PNG, 2, PROBS, "v1", 1.0)  # and the lock is gone


def _hold_transaction_and_die(path: str) -> None:
    import os

    store = Store(path)
    store._conn.execute("BEGIN IMMEDIATE")
    store._conn.execute(
        "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version, latency_ms)"
        " VALUES ('x', x'00', 1, '[]', 'v', 1)"
    )
    os._exit(3)
