"""Several machines on one PostgreSQL store: one cycle at a time, and every row of many writers kept once.

A "machine" here is a process with a home folder of its own; the only thing they share is
``MNIST_HITL_DATABASE_URL`` (a real PostgreSQL 15 server, ``postgres`` in conftest.py).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.config import get_settings
from mnist_hitl.learning.loop.lock import CycleBusy, cycle_lock, cycle_running
from mnist_hitl.store import Store

HOLD = """
import sys, time
from mnist_hitl.config import get_settings
from mnist_hitl.learning.loop.lock import cycle_lock
with cycle_lock(get_settings()) as cycle_id:
    print(cycle_id, flush=True)
    time.sleep(600)
"""


def machine(tmp_path: Path, name: str, database_url: str):
    return get_settings().replace(home=tmp_path / name, database_url=database_url)


def test_one_cycle_at_a_time_across_machines_and_a_killed_holder_frees_the_lock(tmp_path, postgres_url):
    first, second = machine(tmp_path, "first", postgres_url), machine(tmp_path, "second", postgres_url)
    environment = {**os.environ, "MNIST_HITL_HOME": str(first.home), "MNIST_HITL_DATABASE_URL": postgres_url}
    holder = subprocess.Popen([sys.executable, "-c", HOLD], env=environment, stdout=subprocess.PIPE, text=True)
    try:
        held_by = holder.stdout.readline().strip()
        assert held_by, "the first machine never took the lock"
        assert cycle_running(second)
        with pytest.raises(CycleBusy, match=f"cycle {held_by} pid {holder.pid}"), cycle_lock(second):
            pytest.fail("a second cycle ran while the first held the lock")
        assert not (second.home / "cycle.lock").exists()  # no file lock on a shared database
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    deadline = time.monotonic() + 30
    while cycle_running(second) and time.monotonic() < deadline:  # the server notices the closed connection
        time.sleep(0.1)
    with cycle_lock(second) as cycle_id:
        assert cycle_id and cycle_running(first)
    assert not cycle_running(first)


def _predict_and_label(home: str, database_url: str, worker: int, rounds: int, results) -> None:
    from mnist_hitl.config import get_settings
    from mnist_hitl.workbench import Workbench

    settings = get_settings().replace(home=Path(home), database_url=database_url)
    rng = np.random.default_rng(worker)
    ids = []
    with Workbench(settings, source=f"writer-{worker}") as bench:
        for i in range(rounds):
            picture = (rng.random((28, 28)) * 255).astype(np.uint8)
            result = bench.predict_picture(picture)
            bench.label(result.prediction_id, (worker + i) % 10, "correct")
            ids.append(result.prediction_id)
    results.put((worker, ids))


def test_eight_machines_predict_and_label_200_times_each_and_every_row_is_there_once(
    tmp_path, postgres_url, trained_models
):
    writers, rounds = 8, 200
    homes = []
    for worker in range(writers):
        home = tmp_path / f"machine-{worker}"
        shutil.copytree(trained_models, home / "models")
        homes.append(str(home))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_predict_and_label, args=(homes[w], postgres_url, w, rounds, results))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:  # each reports a few kilobytes: they exit without waiting for the reader
        process.join(600)
        assert process.exitcode == 0
    reported = dict(results.get(timeout=10) for _ in processes)
    all_ids = [i for ids in reported.values() for i in ids]
    assert len(all_ids) == len(set(all_ids)) == writers * rounds
    with Store(postgres_url) as store:
        counts = store.counts()
        assert counts["predictions"] == counts["labels"] == counts["labelled_predictions"] == writers * rounds
        labelled = {
            prediction.id: (prediction.source, label.label) for prediction, label in store.labelled_predictions()
        }
    for worker, ids in reported.items():
        assert [labelled[i] for i in ids] == [(f"writer-{worker}", (worker + i) % 10) for i in range(rounds)]


def test_the_database_url_names_a_sqlite_file_or_a_shared_postgresql_and_nothing_else(tmp_path):
    from mnist_hitl.config import SettingsError

    base = get_settings().replace(home=tmp_path / "home")
    assert base.store_location == base.db_path and not base.shared_database
    on_file = base.replace(database_url=f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")
    assert on_file.store_location == tmp_path / "elsewhere.sqlite" and not on_file.shared_database
    with Store(on_file.store_location) as store:
        assert store.dialect == "sqlite"
    shared = base.replace(database_url="postgresql+psycopg://mnist@db:5432/mnist_hitl")
    assert shared.shared_database and shared.optuna_storage == shared.database_url
    with pytest.raises(SettingsError, match="MNIST_HITL_DATABASE_URL='mysql://db/x'"):
        base.replace(database_url="mysql://db/x")
