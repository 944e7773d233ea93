"""Label ids become visible in id order, so a watermark (the largest label id a cycle read) never skips a label.

Several writer processes label and undo at once while an observer polls the ids it can see: an id
that appears after a higher one was already visible is a label that a cycle could have counted as
seen without reading it. On PostgreSQL that happens without the store's label-order lock (issue 21,
finding 4); on SQLite writers take turns on the write lock.
"""

from __future__ import annotations

import multiprocessing
import threading

from sqlalchemy import create_engine, text

from mnist_hitl.store import Store

WRITERS, LABELS = 4, 300  # per writer; about a second of writing each on PostgreSQL


def _write_labels(location: str, first_prediction: int, count: int, start) -> None:
    """Label ``count`` predictions from ``first_prediction`` on, undoing every third label."""
    with Store(location) as store:
        start.wait(60)
        for i in range(count):
            prediction_id = first_prediction + i
            store.add_label(prediction_id, i % 10, "correct", reviewer="writer")
            if i % 3 == 0:
                store.undo_label(prediction_id, reviewer="writer")


def _watch(url: str, stop: threading.Event, late: list[tuple[int, int]], polls: list[int]) -> None:
    """Poll the visible label ids until ``stop``; note each id that showed up below the highest seen before."""
    engine = create_engine(url)
    seen: set[int] = set()
    highest = 0
    with engine.connect() as conn:
        while True:
            last = stop.is_set()  # one more poll after the writers have finished
            ids = [row[0] for row in conn.execute(text("SELECT id FROM labels"))]
            conn.rollback()  # a fresh snapshot for each poll
            new = [i for i in ids if i not in seen]
            late.extend((i, highest) for i in new if i < highest)
            seen.update(new)
            highest = max(seen, default=0)
            polls.append(len(ids))
            if last:
                break
    engine.dispose()


def _labels_appear_in_id_order(location: str, observer_url: str) -> None:
    picture = bytes(range(64))
    with Store(location) as store:
        store.record_predictions([(picture, 1, [0.1] * 10, "v1", 1.0, "api") for _ in range(WRITERS * LABELS)])
        first_id = store.predictions()[0].id
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    writers = [
        context.Process(target=_write_labels, args=(location, first_id + w * LABELS, LABELS, start))
        for w in range(WRITERS)
    ]
    stop, late, polls = threading.Event(), [], []
    observer = threading.Thread(target=_watch, args=(observer_url, stop, late, polls))
    for writer in writers:
        writer.start()
    observer.start()
    try:
        for writer in writers:
            writer.join(300)
            assert writer.exitcode == 0
    finally:
        stop.set()
        observer.join(60)
    expected = WRITERS * (LABELS + (LABELS + 2) // 3)
    assert polls[-1] == expected
    assert len(polls) > 20, "the observer hardly looked"
    assert late == [], f"{len(late)} label ids became visible after a higher one: (id, highest seen) {late[:5]}"
    with Store(location) as store:
        assert [label.id for label in store.labels()] == sorted({label.id for label in store.labels()})


def test_on_postgresql_label_ids_become_visible_in_id_order_under_concurrent_writers(postgres_url):
    _labels_appear_in_id_order(postgres_url, postgres_url)


def test_on_sqlite_label_ids_become_visible_in_id_order_under_concurrent_writers(tmp_path):
    path = tmp_path / "store.sqlite"
    _labels_appear_in_id_order(str(path), f"sqlite:///{path}")
