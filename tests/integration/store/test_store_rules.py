"""The store's rules hold for any connection; it migrates in place, fails in one clear line, backs up while written."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_hitl.store import MAX_ID, SCHEMA_VERSION, Store, StoreError
from tests.support.helpers import REPO, run_cli

PNG = b"\x89PNG fake but non-empty"
PROBS = [0.01] * 9 + [0.91]
BENCH = REPO / "bench"

# The schema of version 1 as it was released: stores made with it are in use and must migrate.
SCHEMA_V1 = """
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
INSERT_PREDICTION = (
    "INSERT INTO predictions (id, created_at, png, predicted_label, probabilities, model_version,"
    " latency_ms) VALUES (?, '2000-01-01', x'00', 2, '[]', 'forged', 1)"
)
INSERT_LABEL = (
    "INSERT INTO labels (id, prediction_id, label, kind, created_at) VALUES (?, ?, 7, 'correct', '2000-01-01')"
)


@pytest.fixture
def path(tmp_path) -> Path:
    """A store holding one prediction (id 1) with one label (id 1)."""
    store_path = tmp_path / "store.sqlite"
    with Store(store_path) as store:
        store.add_label(store.record_prediction(PNG, 9, PROBS, "v1", 1.0), 9, "confirm")
    return store_path


def plain_connection(path: Path) -> sqlite3.Connection:
    """A connection as any other program opens one: foreign keys and recursive triggers off."""
    connection = sqlite3.connect(path, isolation_level=None)
    assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 0
    assert connection.execute("PRAGMA recursive_triggers").fetchone()[0] == 0
    return connection


def rows(path: Path) -> tuple[list, list]:
    with sqlite3.connect(path) as connection:
        return (
            connection.execute("SELECT id, created_at, predicted_label, model_version FROM predictions").fetchall(),
            connection.execute("SELECT * FROM labels").fetchall(),
        )


# the rules, for every connection --------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        INSERT_LABEL.replace("INSERT", "INSERT OR REPLACE"),  # overwrote the label and forged its time
        INSERT_LABEL.replace("INSERT", "REPLACE"),
        INSERT_LABEL.replace("INSERT", "INSERT OR IGNORE"),
    ],
)
def test_a_label_cannot_be_replaced_by_any_connection(path, statement):
    before = rows(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        plain_connection(path).execute(statement, (1, 1))
    assert rows(path) == before


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE predictions SET predicted_label = 3",
        "DELETE FROM predictions",
        INSERT_PREDICTION.replace("INSERT", "INSERT OR REPLACE"),
    ],
)
def test_predictions_are_immutable_for_any_connection(path, statement):
    before = rows(path)
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        plain_connection(path).execute(statement, (1,) if "?" in statement else ())
    assert rows(path) == before


def test_a_label_needs_its_prediction_even_with_foreign_keys_off(path):
    with pytest.raises(sqlite3.IntegrityError, match="existing prediction"):
        plain_connection(path).execute(INSERT_LABEL, (None, 999))
    assert len(rows(path)[1]) == 1


@pytest.mark.parametrize("row_id", [0, -1, -(2**63)])
def test_ids_start_at_one(path, row_id):
    connection = plain_connection(path)
    with pytest.raises(sqlite3.IntegrityError, match="ids start at 1"):
        connection.execute(INSERT_PREDICTION, (row_id,))
    with pytest.raises(sqlite3.IntegrityError, match="ids start at 1"):
        connection.execute(INSERT_LABEL, (row_id, 1))
    connection.execute(INSERT_LABEL, (None, 1))  # an id SQLite picks is still fine
    assert [label[0] for label in rows(path)[1]] == [1, 2]


def test_the_stores_own_connections_keep_foreign_keys_and_recursive_triggers_on(path):
    with Store(path) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert connection.exec_driver_sql("PRAGMA recursive_triggers").scalar_one() == 1


@pytest.mark.parametrize("prediction_id", [10**20, MAX_ID + 1, -(2**63) - 1, -1, 0])
def test_ids_outside_sqlites_integers_are_unknown_predictions_not_crashes(path, prediction_id):
    with Store(path) as store:
        with pytest.raises(StoreError, match=f"no prediction with id {prediction_id}"):
            store.get_prediction(prediction_id)
        with pytest.raises(StoreError, match=f"no prediction with id {prediction_id}"):
            store.add_label(prediction_id, 3)
        assert store.labels(prediction_id) == []
        assert store.counts()["labels"] == 1


def test_watermarks_beyond_sqlites_integers_compare_as_they_should(path):
    with Store(path) as store:
        assert store.predictions(since_id=10**20) == [] and len(store.predictions(since_id=-(10**20))) == 1
        assert store.labelled_predictions(since_label_id=10**20) == []
        assert len(store.labelled_predictions(since_label_id=-(10**20))) == 1


# migration ---------------------------------------------------------------------------------------------


def test_a_version_1_store_migrates_in_place_and_keeps_every_row(tmp_path):
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("PRAGMA journal_mode = WAL")
        old.executescript(SCHEMA_V1)
        old.execute("PRAGMA user_version = 1")
        old.execute(INSERT_PREDICTION, (1,))
        old.execute(INSERT_LABEL, (1, 1))
        old.execute("INSERT INTO meta (key, value) VALUES ('watermark', '1')")
    old.close()
    before = rows(path)
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        assert store.get_meta("watermark") == "1"
        assert [(p.id, label.label) for p, label in store.labelled_predictions()] == [(1, 7)]
        store.add_label(1, 3)
    assert rows(path)[0] == before[0] and rows(path)[1][0] == (*before[1][0], "unknown")  # its reviewer
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        plain_connection(path).execute(INSERT_LABEL.replace("INSERT", "INSERT OR REPLACE"), (1, 1))
    with Store(path) as again:  # opening a migrated store changes nothing
        assert again.schema_version == SCHEMA_VERSION and again.counts()["labels"] == 2


def test_a_store_from_a_newer_version_is_refused(path):
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer than this code"):
        Store(path)


# failures in one line ----------------------------------------------------------------------------------


def test_sqlite_failures_become_store_errors_that_say_what_to_do(tmp_path, path):
    not_a_store = tmp_path / "notes.sqlite"
    not_a_store.write_text("shopping list\n" * 200)
    with pytest.raises(StoreError, match="not a usable SQLite store .* move it aside"):
        Store(not_a_store)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="cannot create the store's folder"):
        Store(tmp_path / "a-file" / "home" / "store.sqlite")
    holder = plain_connection(path)
    holder.execute("BEGIN IMMEDIATE")
    with Store(path, timeout=0.2) as store:
        with pytest.raises(StoreError, match="stayed locked by another process"):
            store.add_label(1, 4)
        assert store.get_prediction(1).predicted_label == 9  # reading goes on
    holder.execute("ROLLBACK")


def run_without_privileges(home: Path, *args: str, setpriv: str | None) -> subprocess.CompletedProcess:
    """``mnist-hitl ARGS`` as a user whom file permissions bind (root ignores them: its capabilities are dropped)."""
    command = [str(Path(sys.executable).parent / "mnist-hitl"), *args]
    if setpriv is not None:
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    return subprocess.run(
        command,
        env={**os.environ, "MNIST_HITL_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def setpriv(require_binary) -> str | None:
    return require_binary("setpriv", "util-linux") if os.geteuid() == 0 else None


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_a_read_only_store_is_refused_in_one_line_and_leaves_no_files_behind(home, setpriv):
    with Store(home.db_path) as store:
        store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    home.db_path.chmod(0o444)
    for args in (["status"], ["correct", "1", "3"], ["confirm", "1"]):
        done = run_without_privileges(home.home, *args, setpriv=setpriv)
        assert done.returncode == 1
        assert f"the store is read-only for this user: {home.db_path} cannot be written" in _one_line(done)
    assert sorted(p.name for p in home.home.glob("store.sqlite*")) == ["store.sqlite"]
    home.db_path.chmod(0o644)  # repaired: works at once
    assert run_without_privileges(home.home, "correct", "1", "3", setpriv=setpriv).returncode == 0


def test_read_only_wal_files_left_behind_are_named(home, setpriv):
    Store(home.db_path).close()
    shm = home.db_path.with_name("store.sqlite-shm")
    shm.write_bytes(b"")
    shm.chmod(0o444)  # what an older mnist-hitl left after opening a read-only store
    done = run_without_privileges(home.home, "status", setpriv=setpriv)
    assert done.returncode == 1 and f"{shm} cannot be written" in _one_line(done)
    shm.chmod(0o644)
    assert run_without_privileges(home.home, "status", setpriv=setpriv).returncode == 0


# backup while the app writes ------------------------------------------------------------------------------


def _write_until(path: str, stop, started) -> None:
    with Store(path) as store:
        while not stop.is_set():
            prediction_id = store.record_prediction(os.urandom(2000), 1, PROBS, "writer", 1.0)
            store.add_label(prediction_id, prediction_id % 10, "correct")
            started.set()


def test_a_backup_taken_while_a_process_writes_is_whole_and_consistent(home, tmp_path):
    Store(home.db_path).close()
    context = multiprocessing.get_context("spawn")
    stop, started = context.Event(), context.Event()
    writer = context.Process(target=_write_until, args=(str(home.db_path), stop, started))
    writer.start()
    try:
        assert started.wait(60)
        printed = [json.loads(run_cli(home, "backup", str(tmp_path / f"backup-{n}.sqlite")).stdout) for n in range(3)]
    finally:
        stop.set()
        writer.join(60)
    assert writer.exitcode == 0  # and the writer was never refused: no "database is locked"
    with Store(home.db_path) as store:
        final = store.counts()
    for n, summary in enumerate(printed):
        copy = sqlite3.connect(tmp_path / f"backup-{n}.sqlite")
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
        assert copy.execute("PRAGMA foreign_key_check").fetchall() == []
        predictions, last_id = copy.execute("SELECT COUNT(*), MAX(id) FROM predictions").fetchone()
        labels = copy.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        copy.close()
        assert (summary["predictions"], summary["labels"], summary["integrity"]) == (predictions, labels, "ok")
        assert predictions == last_id and predictions - labels in (0, 1)  # a snapshot: no gap, no half of a pair
        assert 0 < predictions < final["predictions"]  # taken while the writer was writing
    assert [summary["predictions"] for summary in printed] == sorted(summary["predictions"] for summary in printed)


def test_a_backup_never_overwrites_without_force(home, tmp_path):
    with Store(home.db_path) as store:
        store.record_prediction(PNG, 9, PROBS, "v1", 1.0)
    target = tmp_path / "kept.sqlite"
    target.write_text("something precious")
    refused = run_cli(home, "backup", str(target), check=False)
    assert refused.returncode == 1 and "--force" in _one_line(refused)
    assert target.read_text() == "something precious"
    assert json.loads(run_cli(home, "backup", "--force", str(target)).stdout)["predictions"] == 1
    refused = run_cli(home, "backup", "--force", str(home.db_path), check=False)
    assert refused.returncode == 1 and "another file than the store itself" in _one_line(refused)


# many processes at once ---------------------------------------------------------------------------------------


def test_many_processes_predicting_and_labelling_at_once_lose_nothing(home_with_model):
    """A small run of bench/load.py: nothing lost, no "database is locked"; its timings are not judged."""
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "load.py"),
            "--processes",
            "4",
            "--rounds",
            "25",
            "--home",
            str(home_with_model.home),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["lost"] == 0 and figures["errors"] == [] and figures["worker_exit_codes"] == [0], figures
    assert figures["predictions_stored"] == figures["labelled_predictions_stored"] == 100
    assert "database is locked" not in done.stderr and done.returncode == 0
