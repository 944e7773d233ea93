"""Benchmark: one Optuna search's wall time with 1 and 2 worker processes on PostgreSQL, same trial count.

Starts a PostgreSQL server (``bench/support.py``'s, which the tests start too), then runs the retraining's search
(:func:`mnist_hitl.learning.retrain.search.run_search`, ``--trials`` trials of ``--epochs`` epoch(s) on the
bundled MNIST digits) twice, each time on a database and a home of its own: in this process alone
(the default, ``MNIST_HITL_SEARCH_WORKERS=0``), then with one ``mnist-hitl search-worker --once``
beside it. The worker is started, and has imported TensorFlow, before the clock starts; its loading
of the data once the search is asked for is timed. Prints the wall seconds, who ran which trial and
the speed-up; writes ``bench/results/scale_search.json`` (``scale_search_threads<N>.json`` with
``--threads``); asserts nothing.

By default TensorFlow spreads each process over every core, so on a small machine two processes
compete for the same cores; ``--threads 1`` gives each process one (``TF_NUM_INTRAOP_THREADS``).

    .venv/bin/python bench/scale_search.py [--trials 8] [--epochs 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from support import Postgres, temporary_home, write_results


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """``mnist-hitl search-worker --once``, returned once it waits for a search."""
    command = [str(Path(sys.executable).parent / "mnist-hitl"), "search-worker", "--once", "--poll-seconds", "0.2"]
    worker = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    while "waiting for a search" not in log.read_text():
        if worker.poll() is not None:
            raise RuntimeError(f"the search worker stopped: {log.read_text()}")
        time.sleep(0.2)
    return worker


def search(server: Postgres, processes: int, trials: int, epochs: int) -> dict:
    """One search of ``trials`` trials by ``processes`` processes (this one and ``processes - 1`` workers)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.retrain import labels
    from mnist_hitl.learning.retrain.search import STUDY_NAME, run_search
    from mnist_hitl.store import open_store

    home = temporary_home("scale-search-")
    settings = get_settings(home=home, database_url=server.new_database("bench"))
    env = {**os.environ, "MNIST_HITL_HOME": str(home), "MNIST_HITL_DATABASE_URL": settings.database_url}
    workers = [start_worker(env, home / f"worker{i}.log") for i in range(processes - 1)]
    with open_store(settings) as store:
        data = labels.retrain_data(settings, store, None, oversample=5)
    try:
        start = time.perf_counter()
        result = run_search(
            data, settings.optuna_storage, STUDY_NAME, trials, epochs, initial_weights=None, workers=processes - 1
        )
        seconds = time.perf_counter() - start
        for worker in workers:
            worker.communicate(timeout=600)
    finally:
        for worker in workers:
            worker.kill()
        shutil.rmtree(home, ignore_errors=True)
    by = Counter("this process" if r["worker"].endswith(f":{os.getpid()}") else "worker" for r in result.trials)
    return {
        "processes": processes,
        "trials_complete": len(result.trials),
        "trials_by": dict(by),
        "wall_seconds": round(seconds, 1),
        "seconds_per_trial": round(seconds / max(1, len(result.trials)), 2),
        "best_value": round(result.best_value, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, help="TensorFlow threads per process (default: every core)")
    args = parser.parse_args()
    if args.threads:  # read by TensorFlow when it starts, here and in the workers
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    from mnist_hitl.learning.retrain.network import keras_module

    keras_module()  # TensorFlow's import, out of the timed runs
    server = Postgres().start()
    try:
        runs = {}
        for processes in (1, 2):
            runs[f"{processes} process{'es' * (processes > 1)}"] = figures = search(
                server, processes, args.trials, args.epochs
            )
            print(f"{processes} process(es): {figures}", flush=True)
    finally:
        server.stop()
    one, two = (figures["wall_seconds"] for figures in runs.values())
    speedup = round(one / two, 2)
    print(f"wall seconds: {one} alone, {two} with one worker beside it; speed-up {speedup}x (ideal on 2 cores: 2x)")
    output = {"cpus": os.cpu_count(), "threads": args.threads, "trials": args.trials, "epochs_per_trial": args.epochs}
    name = f"scale_search_threads{args.threads}" if args.threads else "scale_search"
    write_results(name, {**output, **runs, "speedup": speedup})


if __name__ == "__main__":
    main()
