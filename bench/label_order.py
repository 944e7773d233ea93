"""Benchmark: what the label-order lock costs on PostgreSQL, in labels stored per second with N writers.

Every label insert on PostgreSQL takes one advisory lock until its commit, so label ids become
visible in id order (``Store._insert_label``; issue 21). Each writer is a process labelling
predictions of its own, as an API worker does; each count of writers runs with the lock and
again without it (the store's insert patched in the writers), on a PostgreSQL server started
here that flushes every commit to disk, as in production (``--no-fsync``: as the tests run it).
Prints labels per second and the p99 of one label, and writes ``bench/results/label_order.json``.

    .venv/bin/python bench/label_order.py [--writers 1 2 4 8] [--labels 300] [--no-fsync]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
from support import Postgres, machine, report


def _writer(url: str, first: int, count: int, locked: bool, start, results) -> None:
    from mnist_hitl.store import Store, database

    if not locked:  # as the store inserted labels before the lock
        database.Store._insert_label = lambda self, conn, row: self._insert(conn, database._INSERT_LABEL, row)
    times = []
    with Store(url) as store:
        start.wait(120)
        for i in range(count):
            began = time.perf_counter()
            store.add_label(first + i, i % 10, "correct")
            times.append(time.perf_counter() - began)
    results.put(times)


def _run(url: str, writers: int, labels: int, locked: bool) -> dict:
    from mnist_hitl.store import Store

    with Store(url) as store:
        store.record_predictions([(b"png", 1, [0.1] * 10, "v1", 1.0, "api") for _ in range(writers * labels)])
        first = store.predictions()[-writers * labels].id
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(writers + 1), context.Queue()
    processes = [
        context.Process(target=_writer, args=(url, first + w * labels, labels, locked, start, results))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    start.wait(120)
    began = time.perf_counter()
    times = np.concatenate([results.get(timeout=600) for _ in processes])
    wall = time.perf_counter() - began
    for process in processes:
        process.join(60)
    return {"labels_per_second": len(times) / wall, "label_ms_p50": 1000 * float(np.percentile(times, 50))} | {
        "label_ms_p99": 1000 * float(np.percentile(times, 99))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--labels", type=int, default=300, help="labels per writer")
    parser.add_argument("--no-fsync", action="store_true", help="a server that does not flush commits (as in tests)")
    args = parser.parse_args()
    server = Postgres(durable=not args.no_fsync).start()
    figures = machine() | {"fsync": not args.no_fsync, "labels_per_writer": args.labels}
    try:
        for writers in args.writers:
            for locked in (False, True):
                measured = _run(server.new_database(), writers, args.labels, locked)
                name = f"{writers}_writers_{'lock' if locked else 'no_lock'}"
                figures |= {f"{name}_{key}": value for key, value in measured.items()}
    finally:
        server.stop()
    report("label_order", figures, decimals=1)


if __name__ == "__main__":
    main()
