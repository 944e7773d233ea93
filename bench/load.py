"""Benchmark: N processes x M predictions and labels on one store, all at once.

Each process opens its own ``Workbench`` on one home, as each app kernel does, and M times
predicts a drawing (preprocess + LiteRT + SQLite) then labels it (a confirmation or a
correction). Then the store must hold every row: M predictions from each process, and a
label on each of them. Prints p50/p99 latency of each operation, the throughput and every
error (a "database is locked" would be one); exits 1 if a row is missing or an operation
failed, never on a timing. ``tests/integration/store/test_store_rules.py`` runs a small version.

    .venv/bin/python bench/load.py [--processes 8] [--rounds 500] [--home DIR] [--json]

Without ``--home``, trains the first model in a temporary home (a minute).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
from sqlalchemy import text
from support import report, temporary_home, train_unless_deployed

DRAWINGS = [
    [[(140, 40), (140, 240)]],
    [[(80, 60), (200, 60), (120, 230)]],
    [[(90, 80), (140, 40), (190, 80), (90, 240), (200, 240)]],
    [[(100, 50), (190, 50), (120, 140), (190, 190), (110, 240)]],
]


def worker(home: str, source: str, rounds: int, start, results, database_url: str = "") -> None:
    """Predict and label ``rounds`` times on the store of ``home``; put timings and errors on ``results``."""
    report = {
        "source": source,
        "began": time.time(),
        "ended": time.time(),
        "timings": {"predict": [], "label": []},
        "errors": [],
    }
    try:
        _work(home, source, rounds, start, report, database_url)
    except Exception as error:  # reported, never hidden: a lost row must be explained
        report["errors"].append(f"{type(error).__name__}: {error}")
    finally:
        report["ended"] = time.time()
        results.put(report)


def _work(home: str, source: str, rounds: int, start, report: dict, database_url: str) -> None:
    from mnist_hitl.config import get_settings
    from mnist_hitl.preprocess import render_strokes, to_mnist
    from mnist_hitl.workbench import Workbench

    pictures = [render_strokes(strokes) for strokes in DRAWINGS]
    rng = np.random.default_rng(zlib.crc32(source.encode()))
    timings = report["timings"]
    settings = get_settings(home=Path(home)).replace(database_url=database_url)
    with Workbench(settings, source=source) as bench:
        bench.predictor.predict(to_mnist(pictures[0]))  # load the model before the clock starts; stores nothing
        start.wait()
        report["began"] = time.time()
        for i in range(rounds):
            try:
                tick = time.perf_counter()
                result = bench.predict_picture(np.roll(pictures[i % len(pictures)], rng.integers(-20, 20), axis=1))
                middle = time.perf_counter()
                if i % 2:
                    bench.label(result.prediction_id, int(rng.integers(0, 10)), "correct")
                else:
                    bench.label(result.prediction_id, result.predicted_label, "confirm")
                timings["predict"].append((middle - tick) * 1000)
                timings["label"].append((time.perf_counter() - middle) * 1000)
            except Exception as error:
                report["errors"].append(f"{type(error).__name__}: {error}")


def run_load(home: Path, processes: int, rounds: int, database_url: str = "") -> dict:
    """Run the load on ``home`` (which has a deployed model) and check the store; returns the figures.

    Args:
        database_url: a PostgreSQL store instead of the home's SQLite file.
    """
    from mnist_hitl.store import Store

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    run = uuid.uuid4().hex[:8]
    sources = [f"load-{run}-{n}" for n in range(processes)]
    workers = [
        context.Process(target=worker, args=(str(home), source, rounds, start, results, database_url))
        for source in sources
    ]
    for process in workers:
        process.start()
    time.sleep(0.5)  # let them import before the start: the figures are of the store, not of Python's imports
    start.set()
    reports = [results.get(timeout=3600) for _ in workers]
    for process in workers:
        process.join(60)
    with Store(database_url or home / "store.sqlite") as store, store.engine.connect() as connection:
        pattern = {"pattern": f"load-{run}-%"}
        rows = dict(
            connection.execute(
                text(
                    "SELECT p.source, COUNT(DISTINCT p.id) FROM predictions p JOIN labels l"
                    " ON l.prediction_id = p.id WHERE p.source LIKE :pattern GROUP BY p.source"
                ),
                pattern,
            ).all()
        )
        predictions = dict(
            connection.execute(
                text("SELECT source, COUNT(*) FROM predictions WHERE source LIKE :pattern GROUP BY source"), pattern
            ).all()
        )
    wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    figures: dict[str, object] = {
        "processes": processes,
        "rounds": rounds,
        "expected_rows": processes * rounds,
        "predictions_stored": sum(predictions.values()),
        "labelled_predictions_stored": sum(rows.values()),
        "lost": sum(rounds - rows.get(source, 0) for source in sources),
        "worker_exit_codes": sorted({p.exitcode for p in workers}),
        "errors": [e for r in reports for e in r["errors"]],
        "wall_seconds": round(wall, 2),
    }
    for operation in ("predict", "label"):
        values = [value for report in reports for value in report["timings"][operation]]
        if values:
            figures[f"{operation}_ms_p50"] = round(float(np.percentile(values, 50)), 2)
            figures[f"{operation}_ms_p99"] = round(float(np.percentile(values, 99)), 2)
    figures["predict_and_label_per_second"] = round(processes * rounds / wall, 1) if wall > 0 else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8, help="processes writing at once")
    parser.add_argument("--rounds", type=int, default=500, help="predictions (each then labelled) per process")
    parser.add_argument("--home", type=Path, help="a home with a deployed model (default: train one)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line, write no results")
    args = parser.parse_args()
    home = args.home.resolve() if args.home else temporary_home("mnist-hitl-load-")
    train_unless_deployed(home)
    os.environ["MNIST_HITL_HOME"] = str(home)  # where the workers' metrics go
    figures = run_load(home, args.processes, args.rounds)
    if args.json:
        print(json.dumps(figures))
    else:
        report("load", figures)
    if figures["lost"] or figures["errors"] or figures["worker_exit_codes"] != [0]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
