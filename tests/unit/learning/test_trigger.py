"""The label-count trigger: enough new labels start exactly one learning cycle, never two at once.

No Prefect and no training: ``start`` is a recorder standing in for the scheduler's flow run.
(A cycle asked for while another holds the lock returns ``busy``: tests/test_loop.py.)
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from mnist_hitl.config import SettingsError, get_settings
from mnist_hitl.learning.loop import schedule, trigger
from mnist_hitl.learning.loop.lock import cycle_lock
from mnist_hitl.learning.loop.watermarks import advance_watermarks
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import Store

PICTURE = encode_png(np.zeros((28, 28), np.uint8))


def add_labels(settings, count: int) -> int:
    """Store ``count`` labelled predictions (confirmations and corrections); returns the newest label id."""
    with Store(settings.db_path) as store:
        first = max((p.id for p in store.predictions()), default=0)
        store.record_predictions([(PICTURE, 1, [0.1] * 10, "v1", 1.0)] * count)
        for offset in range(1, count + 1):
            newest = store.add_label(first + offset, 1 if offset % 2 else 7, "confirm" if offset % 2 else "correct")
    return newest


class Requests:
    """A stand-in for the scheduler's ``start``: remembers each reason it was given."""

    def __init__(self, fail_first: int = 0) -> None:
        self.reasons: list[str] = []
        self.failures_left = fail_first

    def __call__(self, reason: str) -> str:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("the Prefect server is away")
        self.reasons.append(reason)
        return "a flow run"


def test_below_the_threshold_nothing_is_asked_and_undos_do_not_count(home):
    assert home.retrain_every_labels == 100
    add_labels(home, 99)
    with Store(home.db_path) as store:
        store.undo_label(1)
    start = Requests()
    with Store(home.db_path) as store:
        assert trigger.labels_since_retraining(store) == 99
    assert trigger.check_and_request(home, start) is None
    assert start.reasons == []


def test_the_threshold_starts_exactly_one_cycle(home):
    add_labels(home, 104)
    start = Requests()
    reasons = [trigger.check_and_request(home, start) for _ in range(5)]
    expected = "104 new labels since the last retraining (MNIST_HITL_RETRAIN_EVERY_LABELS=100)"
    assert reasons == [expected, None, None, None, None]
    assert start.reasons == [expected]


def test_nothing_is_asked_while_a_cycle_runs(home):
    add_labels(home, 100)
    start = Requests()
    with cycle_lock(home):
        assert trigger.check_and_request(home, start) is None
    assert start.reasons == []
    assert trigger.check_and_request(home, start)  # the lock released: the labels still wait
    assert len(start.reasons) == 1


def test_after_a_retraining_another_hundred_labels_ask_again(home):
    newest = add_labels(home, 100)
    start = Requests()
    assert trigger.check_and_request(home, start)
    with Store(home.db_path) as store:
        advance_watermarks(store, newest, newest)  # the asked-for cycle retrained through them
    add_labels(home, 99)
    assert trigger.check_and_request(home, start) is None
    add_labels(home, 1)
    assert trigger.check_and_request(home, start) == (
        "100 new labels since the last retraining (MNIST_HITL_RETRAIN_EVERY_LABELS=100)"
    )
    assert trigger.check_and_request(home, start) is None
    assert len(start.reasons) == 2


def test_a_request_left_unanswered_is_retried_after_half_an_hour(home):
    add_labels(home, 100)
    start = Requests()
    assert trigger.check_and_request(home, start)
    assert trigger.check_and_request(home, start) is None
    long_ago = datetime.now(UTC) - trigger.RETRY_AFTER - timedelta(seconds=1)
    with Store(home.db_path) as store:
        store.set_meta(trigger.REQUESTED_AT, long_ago.isoformat(timespec="seconds"))
    assert trigger.check_and_request(home, start)
    assert len(start.reasons) == 2


def test_a_request_that_failed_is_not_remembered(home):
    add_labels(home, 100)
    start = Requests(fail_first=1)
    with pytest.raises(ConnectionError):
        trigger.check_and_request(home, start)
    assert trigger.check_and_request(home, start)
    assert len(start.reasons) == 1


def test_the_watch_carries_on_after_a_failed_check_and_stops_when_told(home, caplog):
    add_labels(home, 100)
    stop = threading.Event()
    start = Requests(fail_first=2)
    watcher = threading.Thread(target=trigger.watch, args=(home, start, 0.01, stop), daemon=True)
    watcher.start()
    try:
        for _ in range(500):
            if start.reasons:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        watcher.join(5)
    assert not watcher.is_alive()
    assert len(start.reasons) == 1
    assert sum("the label-count check failed" in r.getMessage() for r in caplog.records) == 2


def test_the_setting_is_read_from_the_environment(home, monkeypatch):
    monkeypatch.setenv("MNIST_HITL_RETRAIN_EVERY_LABELS", "250")
    assert get_settings().retrain_every_labels == 250


@pytest.mark.parametrize("value", ["0", "abc"])
def test_a_bad_threshold_is_a_one_line_settings_error(home, monkeypatch, value):
    monkeypatch.setenv("MNIST_HITL_RETRAIN_EVERY_LABELS", value)
    with pytest.raises(SettingsError) as error:
        get_settings()
    message = str(error.value)
    assert "\n" not in message and "MNIST_HITL_RETRAIN_EVERY_LABELS" in message and repr(value) in message


def test_the_scheduler_watches_while_it_serves_and_asks_prefect_for_a_retraining_run(home, monkeypatch, capsys):
    import prefect.deployments

    seen = {}

    def serve(**options):
        seen["watchers"] = [t for t in threading.enumerate() if t.name == "label-count-trigger" and t.is_alive()]
        seen["limit"] = options["limit"]

    def run_deployment(name, **options):
        seen["run"] = (name, options)
        return type("FlowRun", (), {"name": "brave-otter"})()

    monkeypatch.setattr(schedule.hitl_cycle, "serve", serve)
    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    schedule.serve(home)
    assert len(seen["watchers"]) == 1 and seen["limit"] == 1
    seen["watchers"][0].join(5)
    assert not seen["watchers"][0].is_alive()  # stopped when serving ended
    assert "whenever 100 new labels have arrived" in capsys.readouterr().out

    schedule.request_cycle("104 new labels")
    assert seen["run"] == (
        "hitl-cycle/scheduled",
        {"parameters": {"force_retrain": True}, "timeout": 0, "tags": ["labels"]},
    )
    assert "104 new labels: asked for flow run brave-otter" in capsys.readouterr().out
