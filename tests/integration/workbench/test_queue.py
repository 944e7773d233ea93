"""The review queue, undo and history, doubtful labels, and the store's schema 3.

Hand-built cases store predictions *as made by the deployed model*, with probabilities chosen
here: the queue takes a prediction's own probabilities when the model that made it is the
one deployed, so the order is known in advance. A redeployment makes every score the model's.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.model import deployed_model
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import SCHEMA_VERSION, Store, StoreError
from mnist_hitl.store.schema import migration
from mnist_hitl.workbench import Workbench
from mnist_hitl.workbench.ranking import queue_order, uncertainty
from tests.support.helpers import run_cli


def sure_of(digit: int, p: float) -> list[float]:
    """Probabilities with ``p`` on ``digit`` and the rest shared by the others."""
    return [p if d == digit else (1 - p) / 9 for d in range(10)]


def between(first: int, second: int, p1: float, p2: float) -> list[float]:
    rest = (1 - p1 - p2) / 8
    return [p1 if d == first else p2 if d == second else rest for d in range(10)]


@pytest.fixture
def digits():
    data = load_bundled()
    return data.x_test, data.y_test


@pytest.fixture
def hand_built(home_with_model, digits):
    """Six predictions by the deployed model with known margins; returns (settings, ids by name)."""
    version = deployed_model(home_with_model.models_dir).version
    cases = {  # name: probabilities (margin uncertainty = 1 - (p1 - p2))
        "sure": sure_of(1, 0.99),  # 0.0...
        "torn": between(3, 5, 0.45, 0.44),  # 0.99
        "unsure": between(4, 9, 0.6, 0.3),  # 0.7
        "leaning": between(7, 1, 0.8, 0.1),  # 0.3
        "labelled": between(2, 8, 0.5, 0.49),  # 0.99, but labelled: never queued
        "fairly": between(0, 6, 0.7, 0.25),  # 0.55
    }
    ids = {}
    with Store(home_with_model.db_path) as store:
        for i, (name, probabilities) in enumerate(cases.items()):
            ids[name] = store.record_prediction(
                encode_png(digits[0][i]), int(np.argmax(probabilities)), probabilities, version, 1.0, source="import"
            )
        store.add_label(ids["labelled"], 2, "confirm")
    return home_with_model.replace(queue_random_share=0.0), ids


# the order, as pure functions ------------------------------------------------------------------


def test_margin_and_entropy_rank_the_torn_drawing_least_sure():
    rows = np.array([sure_of(1, 0.99), between(3, 5, 0.45, 0.44), sure_of(2, 0.1)])
    assert uncertainty(rows, "margin") == pytest.approx([1 - (0.99 - 0.01 / 9), 0.99, 1.0])
    entropy = uncertainty(rows, "entropy")
    assert entropy[0] < entropy[1] < entropy[2] == pytest.approx(np.log(10))
    with pytest.raises(ValueError, match="strategy"):
        uncertainty(rows, "loss")


def test_queue_order_puts_a_random_share_from_the_rest_spread_through_it():
    rng = np.random.default_rng(0)
    values, ids = rng.random(1000), np.arange(1, 1001)
    order = queue_order(values, ids, limit=20, random_share=0.1, seed=0)
    chosen = [values[i] for i, drawn in order if not drawn]
    drawn = [i for i, was_drawn in order if was_drawn]
    assert len(order) == 20 and len(drawn) == 2 and len(set(i for i, _ in order)) == 20
    assert chosen == sorted(values, reverse=True)[:18]  # the least sure, in order
    assert all(values[i] < min(chosen) for i in drawn)  # from the rest of the pool
    positions = [k for k, (_, was_drawn) in enumerate(order) if was_drawn]
    assert 0 < positions[0] < positions[1] < 19  # spread, neither first nor last
    assert order == queue_order(values, ids, limit=20, random_share=0.1, seed=0)  # the same queue twice
    assert order != queue_order(values, ids, limit=20, random_share=0.1, seed=1)
    assert [drawn for _, drawn in queue_order(values, ids, 20, 0.0)] == [False] * 20


# the workbench's queue ------------------------------------------------------------------------------


def test_the_least_sure_come_first_and_labelled_ones_never(hand_built):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        queue = bench.queue(limit=10)
        assert [item.prediction_id for item in queue] == [
            ids[n] for n in ("torn", "unsure", "fairly", "leaning", "sure")
        ]
        first = queue[0]
        assert first.uncertainty == pytest.approx(0.99) and first.predicted_label == 3
        assert first.probabilities == pytest.approx(between(3, 5, 0.45, 0.44), abs=1e-6)
        assert first.model_version == deployed_model(settings.models_dir).version
        assert first.source == "import" and first.png.startswith(b"\x89PNG") and not first.random
        assert set(first.as_json()) == {
            "prediction_id",
            "predicted_label",
            "probabilities",
            "uncertainty",
            "model_version",
            "source",
            "random",
        }
        assert [item.prediction_id for item in bench.queue(limit=2)] == [ids["torn"], ids["unsure"]]
        skipped = bench.queue(limit=2, exclude={ids["torn"]})
        assert [item.prediction_id for item in skipped] == [ids["unsure"], ids["fairly"]]
        entropy = bench.queue(limit=10, strategy="entropy")
        assert entropy[0].prediction_id == ids["torn"] and entropy[-1].prediction_id == ids["sure"]


def test_a_label_takes_a_drawing_out_of_the_queue_and_undo_puts_it_back(hand_built):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        bench.label(ids["torn"], 5, "correct")
        assert ids["torn"] not in [item.prediction_id for item in bench.queue()]
        bench.undo(ids["torn"])
        assert bench.queue(limit=1)[0].prediction_id == ids["torn"]
        bench.undo(ids["labelled"])
        assert ids["labelled"] in [item.prediction_id for item in bench.queue()]


def test_a_share_of_the_queue_is_drawn_at_random(hand_built):
    settings, ids = hand_built
    with Workbench(settings.replace(queue_random_share=0.5)) as bench:
        queue = bench.queue(limit=4)
    drawn = [item for item in queue if item.random]
    assert len(queue) == 4 and len(drawn) == 2
    least_sure = [item.prediction_id for item in queue if not item.random]
    assert least_sure == [ids["torn"], ids["unsure"]]
    assert {item.prediction_id for item in drawn} <= {ids["fairly"], ids["leaning"], ids["sure"]}


def test_a_new_deployment_scores_the_queue_again(hand_built, redeploy, digits):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        before = {item.prediction_id: item for item in bench.queue()}
        version = redeploy(settings.models_dir, "20990101-000000-000")
        after = {item.prediction_id: item for item in bench.queue()}
        assert {item.model_version for item in after.values()} == {version}
        for name, prediction_id in ids.items():
            if name == "labelled":
                continue
            own, _ = bench.predictor.predict(digits[0][list(ids).index(name)].astype(np.float32) / 255)
            assert after[prediction_id].probabilities == pytest.approx(own.tolist(), abs=1e-5)  # the model's own
        assert before[ids["torn"]].probabilities != pytest.approx(after[ids["torn"]].probabilities, abs=1e-3)
    with sqlite3.connect(settings.db_path) as connection:
        cached = connection.execute("SELECT model_version, COUNT(*) FROM scores GROUP BY model_version").fetchall()
    assert cached == [(version, len(ids))]  # every prediction, labelled too; the old version's scores dropped
    with Workbench(settings) as fresh:  # another process reads the cache
        assert [item.prediction_id for item in fresh.queue()] == list(after)


def test_a_new_prediction_joins_the_queue_without_rescoring_the_rest(hand_built, digits):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        assert len(bench.queue()) == 5
        result = bench.predict_picture(digits[0][100])
        assert result.prediction_id in [item.prediction_id for item in bench.queue()]


def test_the_app_can_fetch_the_queue_on_one_thread_while_it_labels_on_another(hand_built):
    from concurrent.futures import ThreadPoolExecutor

    settings, ids = hand_built
    with Workbench(settings) as bench, ThreadPoolExecutor(2) as pool:

        def label_and_undo():
            for _ in range(20):
                bench.label(ids["sure"], 1, "confirm")
                bench.undo(ids["sure"])

        def fetch():
            return [len(bench.queue(limit=10)) for _ in range(20)]

        labelled, fetched = pool.submit(label_and_undo), pool.submit(fetch)
        labelled.result(timeout=120)
        assert set(fetched.result(timeout=120)) <= {4, 5}
        assert len(bench.history(ids["sure"])) == 40


# doubtful labels and the accuracy on the users' labels -------------------------------------------


def test_labels_a_confident_model_contradicts_are_doubtful(hand_built):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        bench.label(ids["sure"], 7, "correct")  # the model says 1 at 0.99
        bench.label(ids["leaning"], 1, "correct")  # the model says 7, but only at 0.8
        assert bench.labelled_accuracy() == pytest.approx(1 / 3)  # only "labelled" is read as its label
        doubts = bench.doubtful_labels()
        assert [(d["prediction_id"], d["label"], d["model_label"]) for d in doubts] == [(ids["sure"], 7, 1)]
        assert doubts[0]["model_confidence"] == pytest.approx(0.99)
        assert len(bench.doubtful_labels(confidence=0.75)) == 2
        assert bench.doubtful_labels(confidence=0.995) == []
        (item,) = bench.queue(strategy="doubtful")
        assert item.prediction_id == ids["sure"] and item.predicted_label == 1
        assert item.uncertainty == pytest.approx(1 - 0.01 / 9)
        bench.undo(ids["sure"])
        assert bench.doubtful_labels() == [] and bench.queue(strategy="doubtful") == []


def test_labelled_accuracy_counts_the_latest_labels_only(hand_built):
    settings, ids = hand_built
    with Workbench(settings) as bench:
        assert bench.labelled_accuracy() == 1.0  # "labelled": the person said 2, the model reads 2
        bench.label(ids["labelled"], 8, "correct")
        assert bench.labelled_accuracy() == 0.0
        bench.undo(ids["labelled"])
        assert bench.labelled_accuracy() is None


# history and undo, append-only ------------------------------------------------------------------------


def test_history_and_undo_only_ever_append_rows(hand_built):
    settings, ids = hand_built
    pid = ids["torn"]
    with Workbench(settings) as bench:
        bench.label(pid, 3, "confirm")
        bench.label(pid, 5, "correct")
        undo_id = bench.undo(pid)
        with pytest.raises(StoreError, match="no label to undo"):
            bench.undo(pid)
        with pytest.raises(StoreError, match="no prediction with id 999"):
            bench.undo(999)
        with pytest.raises(StoreError, match="no prediction with id 999"):
            bench.history(999)
        with pytest.raises(StoreError, match="undo"):
            bench.store.add_label(pid, 3, "undo")
        bench.label(pid, 5, "correct")
        history = bench.history(pid)
        assert [(h["label"], h["kind"]) for h in history] == [
            (3, "confirm"),
            (5, "correct"),
            (None, "undo"),
            (5, "correct"),
        ]
        assert history[2]["id"] == undo_id and [h["id"] for h in history] == sorted(h["id"] for h in history)
        assert bench.history(ids["sure"]) == []
    with sqlite3.connect(settings.db_path) as connection:
        rows = connection.execute(
            "SELECT id, label, kind, created_at FROM labels WHERE prediction_id = ? ORDER BY id", (pid,)
        ).fetchall()
        assert rows == [(h["id"], h["label"], h["kind"], h["created_at"]) for h in history]
        insert = "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (1, {}, '{}', 'x')"
        for statement in (
            "UPDATE labels SET label = 3",
            "DELETE FROM labels",
            insert.format(4, "undo"),
            insert.format("NULL", "correct"),
        ):
            with pytest.raises(sqlite3.IntegrityError):
                connection.execute(statement)


def test_the_cli_prints_the_queue_history_and_undo_as_json_lines(hand_built):
    settings, ids = hand_built
    env = {"MNIST_HITL_QUEUE_RANDOM_SHARE": "0"}
    lines = [json.loads(line) for line in run_cli(settings, "queue", "--limit", "3", extra_env=env).stdout.splitlines()]
    assert [line["prediction_id"] for line in lines] == [ids["torn"], ids["unsure"], ids["fairly"]]
    assert set(lines[0]) >= {"prediction_id", "predicted_label", "probabilities", "uncertainty", "model_version"}
    run_cli(settings, "correct", str(ids["torn"]), "5")
    undone = json.loads(run_cli(settings, "undo", str(ids["torn"])).stdout)
    assert undone["kind"] == "undo" and undone["prediction_id"] == ids["torn"]
    history = [json.loads(line) for line in run_cli(settings, "history", str(ids["torn"])).stdout.splitlines()]
    assert [(h["label"], h["kind"]) for h in history] == [(5, "correct"), (None, "undo")]
    for args, status, message in (
        (["undo", str(ids["torn"])], 1, "no label to undo"),
        (["history", "999"], 1, "no prediction with id 999"),
        (["queue", "--strategy", "loss"], 2, "not one of margin, entropy, doubtful"),
        (["queue", "--limit", "-1"], 2, "limit"),
    ):
        done = run_cli(settings, *args, check=False)
        assert done.returncode == status and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_queue_without_a_deployed_model_is_refused_in_one_line(home):
    done = run_cli(home, "queue", check=False)
    assert done.returncode == 1 and "mnist-hitl init" in done.stderr and "Traceback" not in done.stderr


# schema 3 ----------------------------------------------------------------------------------------------


def test_a_version_2_store_migrates_to_3_keeping_every_row_and_rule(tmp_path):
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as old:
        for version in (1, 2):
            for statement in migration(version):
                old.execute(statement)
        old.execute("PRAGMA user_version = 2")
        for i in (1, 2):
            old.execute(
                "INSERT INTO predictions (created_at, png, predicted_label, probabilities, model_version,"
                " latency_ms, source) VALUES ('2026-01-01', ?, 3, ?, 'v1', 1.0, 'app')",
                (f"png {i}".encode(), json.dumps(sure_of(3, 0.9))),
            )
        old.executemany(
            "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (?, ?, ?, '2026-01-02')",
            [(1, 3, "confirm"), (1, 5, "correct"), (2, 3, "confirm")],
        )
    old.close()
    with sqlite3.connect(path) as before:
        labels_before = before.execute("SELECT * FROM labels ORDER BY id").fetchall()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 5  # through 3, then 4 (reviewers), 5 (adjudicate)
        assert [(p.id, label.label) for p, label in store.labelled_predictions()] == [(1, 5), (2, 3)]
        undo_id, undone = store.undo_label(1)
        assert undo_id == 4 and (undone.id, undone.label) == (2, 5)  # ids carry on after the migration
        assert [p.id for p, _ in store.labelled_predictions()] == [2]
        assert store.counts()["labelled_predictions"] == 1
    with sqlite3.connect(path) as after:
        kept = after.execute("SELECT * FROM labels WHERE id <= 3 ORDER BY id").fetchall()
        assert kept == [(*row, "unknown") for row in labels_before]  # the reviewer of an older label
        hashes = after.execute("SELECT png, content_hash FROM predictions ORDER BY id").fetchall()
        assert [h for _, h in hashes] == [hashlib.sha256(png).hexdigest() for png, _ in hashes]
        for statement in (
            "UPDATE predictions SET content_hash = 'x'",
            "DELETE FROM predictions WHERE id = 2",
            "UPDATE labels SET label = 1",
            "DELETE FROM labels WHERE id = 1",
            "INSERT OR REPLACE INTO labels (id, prediction_id, label, kind, created_at)"
            " VALUES (1, 1, 7, 'correct', 'x')",
            "INSERT INTO labels (prediction_id, label, kind, created_at) VALUES (99, 1, 'confirm', 'x')",
        ):
            with pytest.raises(sqlite3.IntegrityError):
                after.execute(statement)
        names = {row[0] for row in after.execute("SELECT name FROM sqlite_master WHERE type IN ('trigger', 'index')")}
        assert {
            "labels_no_update",
            "labels_no_delete",
            "labels_no_replace",
            "labels_positive_id",
            "labels_need_a_prediction",
            "predictions_no_update",
            "predictions_import_hash",
        } <= names


def test_retraining_and_monitoring_read_the_latest_label_and_skip_undone_ones(home, digits):
    from mnist_hitl.learning.retrain.labels import user_labels

    with Store(home.db_path) as store:
        ids = [store.record_prediction(encode_png(digits[0][i]), 1, sure_of(1, 0.9), "v1", 1.0) for i in range(2)]
        store.add_label(ids[0], 4, "correct")
        store.add_label(ids[1], 1, "confirm")
        store.undo_label(ids[1])
        assert user_labels(store).prediction_ids.tolist() == [ids[0]]
        store.add_label(ids[1], 7, "correct")
        assert user_labels(store).y.tolist() == [4, 7]
        assert store.counts() == {
            "predictions": 2,
            "labels": 4,
            "confirmations": 1,
            "corrections": 2,
            "labelled_predictions": 2,
        }
