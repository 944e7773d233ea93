"""Several processes run the trials of one Optuna search: the count adds up, a dead worker blocks nothing.

A real PostgreSQL server holds the store and the study (tests/postgres.py); the workers are real
processes (``mnist-hitl search-worker --once``); the retraining's search runs in this process, as the
retrain notebook runs it. MNIST is 600 real digits, so a trial trains in a second or two.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.learning.retrain import labels, search, search_request
from mnist_hitl.learning.retrain.labels import UserLabels
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import open_store

HOST = socket.gethostname()
WORKER = [str(Path(sys.executable).parent / "mnist-hitl"), "search-worker", "--once", "--poll-seconds", "0.2"]
# The same command with heartbeats every second, a trial stale after 5 s without one.
QUICK_HEARTBEATS = (
    "import sys; from mnist_hitl.learning.retrain import search_request as r;"
    " r.HEARTBEAT_SECONDS, r.GRACE_SECONDS = 1, 5; from mnist_hitl.cli import main;"
    f" sys.argv = {['mnist-hitl', *WORKER[1:]]!r}; main()"
)


@pytest.fixture
def shared_home(home: Settings, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A home whose store and study are on PostgreSQL, with a small MNIST and 20 users' labels."""
    digits = load_bundled(holdout_size=100)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=digits.x_train[:600],
        y_train=digits.y_train[:600],
        x_test=digits.x_test,
        y_test=digits.y_test,
    )
    monkeypatch.setenv("MNIST_HITL_DATABASE_URL", postgres_url)
    monkeypatch.setenv("MNIST_HITL_MNIST_SOURCE", "local")
    monkeypatch.setenv("MNIST_HITL_MNIST_PATH", str(tmp_path / "mnist.npz"))
    settings = get_settings()
    with open_store(settings) as store:
        for x, y in zip(digits.x_test[:20], digits.y_test[:20], strict=True):
            prediction_id = store.record_prediction(encode_png(x), int(y), [0.1] * 10, "v0", 1.0)
            store.add_label(prediction_id, int((y + 1) % 10), "correct")
    return settings


def start_worker(log: Path, command: list[str]) -> subprocess.Popen:
    """A worker process (this environment: the shared home), started and ready: TensorFlow imported, polling."""
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    deadline = time.monotonic() + 120
    while "waiting for a search" not in log.read_text():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"the search worker did not start: {log.read_text()}")
        time.sleep(0.2)
    return worker


def cycle_data(settings: Settings) -> tuple[labels.RetrainData, list]:
    """The retraining's data as the notebook builds them, pseudo-labels and start weights included."""
    from mnist_hitl.learning.retrain.network import build_model

    with open_store(settings) as store:
        data = labels.retrain_data(settings, store, None, oversample=2)
    digits = load_bundled(holdout_size=100)
    x, y = digits.x_test[20:40], digits.y_test[20:40]
    data.pseudo = UserLabels(x, y, np.arange(1000, 1020), np.zeros(20, dtype=np.int64), y)
    return data, build_model().get_weights()


def study_trials(storage) -> list:
    """The study's trials, read afresh (``storage``: a URL or an Optuna storage)."""
    import optuna

    return optuna.load_study(study_name=search.STUDY_NAME, storage=storage).trials


def test_two_search_workers_on_one_study_the_count_adds_up_and_no_trial_runs_twice(shared_home, tmp_path):
    from optuna.trial import TrialState

    workers = [start_worker(tmp_path / f"worker{i}.log", WORKER) for i in range(2)]
    data, weights = cycle_data(shared_home)
    storage = shared_home.optuna_storage
    assert storage.startswith("postgresql")
    try:
        search.run_search(data, storage, search.STUDY_NAME, n_trials=1, initial_weights=weights, workers=0)
        result = search.run_search(data, storage, search.STUDY_NAME, n_trials=5, initial_weights=weights, workers=2)
        outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], [log.read_text() for log in tmp_path.glob("*.log")]

    trials = study_trials(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 1 + 5  # the earlier search's trial, then exactly five
    assert len({t.number for t in complete}) == len(complete)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    new = [t for t in complete if t.number >= 1]
    ran_by = {t.user_attrs["worker"] for t in new}
    expected = {f"{HOST}:{os.getpid()}"} | {f"{HOST}:{worker.pid}" for worker in workers}
    assert {f"{HOST}:{worker.pid}" for worker in workers} <= ran_by <= expected  # each worker ran at least one
    reported = [n for out in outputs for n in json.loads(out.strip().splitlines()[-1])["trials"]]
    here = [r["number"] for r in result.trials if r["worker"] == f"{HOST}:{os.getpid()}"]
    assert sorted(reported + here) == sorted(t.number for t in new)  # every trial ran once, in one process
    assert [r["number"] for r in result.trials] == [t.number for t in new]
    assert set(result.best_params) == {"batch_size", "learning_rate", "dropout"}
    assert result.best_value == max(t.value for t in complete)


def test_a_worker_killed_in_the_middle_of_a_trial_does_not_block_the_search(shared_home, tmp_path, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    monkeypatch.setattr(search_request, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(search_request, "GRACE_SECONDS", 5)
    monkeypatch.setattr(search_request, "POLL_SECONDS", 0.5)
    worker = start_worker(tmp_path / "worker.log", [sys.executable, "-c", QUICK_HEARTBEATS])
    killed: list[int] = []

    def kill_the_worker_in_its_first_trial() -> None:
        storage = optuna.storages.RDBStorage(shared_home.optuna_storage)
        while worker.poll() is None:
            try:
                running = [t for t in study_trials(storage) if t.state == TrialState.RUNNING]
            except KeyError:  # no study yet
                running = []
            for trial in running:
                if trial.user_attrs.get("worker") == f"{HOST}:{worker.pid}":
                    worker.send_signal(signal.SIGKILL)
                    killed.append(trial.number)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_worker_in_its_first_trial)
    killer.start()
    data, weights = cycle_data(shared_home)
    try:
        started = time.monotonic()
        result = search.run_search(
            data, shared_home.optuna_storage, search.STUDY_NAME, 4, initial_weights=weights, workers=1, wait_seconds=60
        )
        seconds = time.monotonic() - started
    finally:
        worker.kill()
        killer.join(timeout=10)
    assert killed, "the worker ran no trial"
    trials = study_trials(shared_home.optuna_storage)
    assert trials[killed[0]].state == TrialState.FAIL  # failed by its stopped heartbeat
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 4
    assert {r["worker"] for r in result.trials} == {f"{HOST}:{os.getpid()}"}
    assert seconds < 60


def test_a_worker_whose_data_differ_refuses_the_search_saying_why(home: Settings):
    import optuna

    from mnist_hitl.learning.retrain.search_worker import SearchWorkerError, trial_objective

    storage = search_request.open_storage(home.optuna_storage)  # SQLite: one machine, the same home
    study = optuna.create_study(storage=storage, study_name=search.STUDY_NAME, direction="maximize")
    request = search_request.SearchRequest(0, 4, 1, 0, 0, 0, 5, fingerprint="of-other-data")
    search_request.publish(storage, study, request, None, None)
    assert search_request.current_request(study) == request and search_request.quota_open(study, request)
    with open_store(home) as store, pytest.raises(SearchWorkerError, match="MNIST_HITL_DATABASE_URL"):
        trial_objective(home, store, storage, study, request, print)
