"""Start a learning cycle when enough labels have arrived, without waiting for the schedule.

The scheduler process checks every minute: at least ``MNIST_HITL_RETRAIN_EVERY_LABELS``
labels newer than the last retraining, and no cycle running, asks for one cycle. The
request is remembered in the store (the newest label id then, and when), so the checks
that follow do not ask again while that cycle waits to start or runs; it is settled once
a retraining has used those labels, or retried when it is :data:`RETRY_AFTER` old and
they are still unused (a run that was lost, or a cycle that failed). A second cycle
asked for by the schedule meanwhile still finds the cycle lock taken and returns ``busy``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mnist_hitl.clock import utc_now
from mnist_hitl.config import Settings
from mnist_hitl.learning.loop.lock import cycle_running
from mnist_hitl.learning.loop.watermarks import newest_label_id, watermarks
from mnist_hitl.store import Store, open_store

log = logging.getLogger(__name__)

REQUESTED_THROUGH = "loop.cycle_requested_through"
REQUESTED_AT = "loop.cycle_requested_at"
RETRY_AFTER = timedelta(minutes=30)


def labels_since_retraining(store: Store) -> int:
    """How many labels (confirmations and corrections, not undos) are newer than the last retraining."""
    return store.count_labels_after(watermarks(store).retrained_through)


def _pending(store: Store) -> bool:
    """Whether an earlier request still waits for its cycle: its labels unused, and not yet retried."""
    requested = int(store.get_meta(REQUESTED_THROUGH, "0"))
    asked_at = store.get_meta(REQUESTED_AT)
    if not asked_at or watermarks(store).retrained_through >= requested:
        return False
    return datetime.now(UTC) - datetime.fromisoformat(asked_at) < RETRY_AFTER


def request(settings: Settings, start: Callable[[str], object], reason: str, wait_for_pending: bool = True) -> bool:
    """Ask for one cycle by calling ``start(reason)``, unless a cycle is running; remember the request.

    The label-count trigger and the app's **Train now** both ask this way, so the trigger does not
    ask again for labels a cycle started by either is about to use.

    Args:
        settings: the home.
        start: creates the cycle; an exception from it leaves nothing remembered.
        reason: why, for the log and the run.
        wait_for_pending: also refuse while an earlier request waits for its cycle (the trigger);
            a person pressing **Train now** is not kept waiting by it.

    Returns:
        Whether it asked.
    """
    if cycle_running(settings):
        return False
    with open_store(settings) as store:
        return _request(store, start, reason, wait_for_pending)


def _request(store: Store, start: Callable[[str], object], reason: str, wait_for_pending: bool) -> bool:
    """:func:`request` once no cycle runs."""
    if wait_for_pending and _pending(store):
        return False
    through = newest_label_id(store)
    start(reason)
    store.set_meta(REQUESTED_AT, utc_now())
    store.set_meta(REQUESTED_THROUGH, str(through))
    log.info("asked for a learning cycle: %s", reason)
    return True


def check_and_request(settings: Settings, start: Callable[[str], object]) -> str | None:
    """Ask for one cycle (:func:`request`) when ``MNIST_HITL_RETRAIN_EVERY_LABELS`` labels have arrived.

    Args:
        settings: the home, and ``MNIST_HITL_RETRAIN_EVERY_LABELS``.
        start: creates the cycle (the scheduler's: a run of the served deployment); an
            exception from it leaves nothing remembered, so the next check asks again.

    Returns:
        The reason it asked, or None: too few labels, a cycle running, or a request pending.
    """
    with open_store(settings) as store:
        count = labels_since_retraining(store)
        if count < settings.retrain_every_labels or cycle_running(settings):
            return None
        threshold = settings.retrain_every_labels
        reason = f"{count} new labels since the last retraining (MNIST_HITL_RETRAIN_EVERY_LABELS={threshold})"
        return reason if _request(store, start, reason, wait_for_pending=True) else None


def watch(
    settings: Settings, start: Callable[[str], object], every_seconds: float = 60, stop: threading.Event | None = None
) -> None:
    """Run :func:`check_and_request` every ``every_seconds`` until ``stop`` is set.

    The first check comes after one interval, when the scheduler has registered its
    deployment. A check that fails (the store locked, the Prefect server away) is logged
    and the next one runs as usual.
    """
    stop = stop or threading.Event()
    while not stop.wait(every_seconds):
        try:
            check_and_request(settings, start)
        except Exception:
            log.exception("the label-count check failed; trying again in %s s", every_seconds)
