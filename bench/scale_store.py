"""Benchmark: the store's throughput with 8 writers, SQLite (the embedded default) against PostgreSQL.

The same load as ``bench/load.py`` (each process predicts a drawing with LiteRT and labels it,
as an app kernel does) on the home's SQLite file, then on a PostgreSQL 15 server started here
(Debian's package, as the tests start it, but flushing every commit to disk as in production).
Every row must be there once on both; prints the figures side by side and the bytes each
prediction takes, and writes ``bench/results/scale_store.json``.

    .venv/bin/python bench/scale_store.py [--processes 8] [--rounds 300] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from load import run_load
from support import Postgres, temporary_home, train_unless_deployed, write_results

SHOWN = ("wall_seconds", "predict_and_label_per_second", "predict_ms_p50", "predict_ms_p99", "label_ms_p50")
SHOWN += ("label_ms_p99", "lost", "errors", "bytes_per_prediction")


def _sqlite_bytes(path: Path) -> int:
    """The store's size on disk per prediction (with its label): what 10 million drawings would take."""
    from mnist_hitl.store import Store

    with Store(path) as store:
        predictions = store.counts()["predictions"]
    size = sum(file.stat().st_size for file in path.parent.glob(path.name + "*"))
    return round(size / max(predictions, 1))


def _postgres_bytes(url: str) -> int:
    """The database's size (tables, indexes, TOAST) per prediction (with its label)."""
    from sqlalchemy import text

    from mnist_hitl.store import Store

    with Store(url) as store, store.engine.connect() as connection:
        size = connection.execute(
            text("SELECT pg_total_relation_size('predictions') + pg_total_relation_size('labels')")
        ).scalar_one()
        return round(size / max(store.counts()["predictions"], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--home", type=Path, help="a home with a deployed model (default: train one)")
    args = parser.parse_args()
    home = args.home.resolve() if args.home else temporary_home("mnist-hitl-load-")
    train_unless_deployed(home)
    os.environ["MNIST_HITL_HOME"] = str(home)
    figures = {"processes": args.processes, "rounds": args.rounds}
    figures["sqlite"] = run_load(home, args.processes, args.rounds)
    figures["sqlite"]["bytes_per_prediction"] = _sqlite_bytes(home / "store.sqlite")
    server = Postgres(durable=True).start()  # every commit flushed, as in production
    try:
        url = server.new_database("bench")
        figures["postgresql"] = run_load(home, args.processes, args.rounds, url)
        figures["postgresql"]["bytes_per_prediction"] = _postgres_bytes(url)
    finally:
        server.stop()
    print(f"{args.processes} writers x {args.rounds} predict+label")
    print(f"{'':<30}{'SQLite':>14}{'PostgreSQL':>14}")
    for name in SHOWN:
        sqlite, postgres = figures["sqlite"].get(name), figures["postgresql"].get(name)
        if isinstance(sqlite, list):
            sqlite, postgres = len(sqlite), len(postgres)
        print(f"{name:<30}{sqlite!s:>14}{postgres!s:>14}")
    write_results("scale_store", figures)
    if any(figures[db]["lost"] or figures[db]["errors"] for db in ("sqlite", "postgresql")):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
