"""Benchmark: the review queue on a large store.

Fills a fresh store with N predictions (bundled MNIST digits, stored in one transaction as
made by an older model, so the deployed model must score every one), then times:

- ``mnist-hitl queue --limit 50`` as a user runs it (a new process): cold (the first call
  scores every prediction and fills the ``scores`` table) and warm (reads the table);
- ``Workbench.queue(50)`` in one process (as an app kernel calls it): its first call (the
  scores read from the table the command filled), warm (the scores held in memory), and
  after 1,000 new predictions (scored incrementally);
- the deployed model on one picture at a time against the batch interpreter.

Prints the figures; never fails on a timing.

    .venv/bin/python bench/review_queue.py [--predictions 100000] [--models DIR] [--json]

Without ``--models`` (a models folder with a deployed model), trains a 2-epoch first model
in the temporary home (half a minute); the queue's speed does not depend on its accuracy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from support import home_with_model


def fill_store(settings, count: int, first: int = 0) -> float:
    """Store ``count`` predictions by an older model version in one transaction; returns the seconds it took."""
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png
    from mnist_hitl.store import Store

    digits = load_bundled().x_train
    pngs = [encode_png(digit) for digit in digits]
    rng = np.random.default_rng(first)
    probabilities = rng.dirichlet(np.full(10, 0.3), size=count)
    start = time.perf_counter()
    with Store(settings.store_location) as store:
        store.record_predictions(
            (pngs[(first + i) % len(pngs)], int(np.argmax(p)), p.tolist(), "older-model", 1.0, "bench")
            for i, p in enumerate(probabilities)
        )
    return time.perf_counter() - start


def time_cli(settings, *args: str) -> float:
    command = [str(Path(sys.executable).parent / "mnist-hitl"), *args]
    env = {"MNIST_HITL_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or len(done.stdout.splitlines()) != int(args[args.index("--limit") + 1]):
        raise SystemExit(f"mnist-hitl {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def time_in_process(settings) -> dict:
    from mnist_hitl.workbench import Workbench

    figures = {}
    with Workbench(settings, source="bench") as bench:
        bench.predictor.refresh()
        start = time.perf_counter()
        bench.queue(limit=50)
        figures["in_process_first_s"] = time.perf_counter() - start
        warm = []
        for _ in range(5):
            start = time.perf_counter()
            bench.queue(limit=50)
            warm.append(time.perf_counter() - start)
        figures["in_process_warm_s"] = statistics.median(warm)
        fill_store(settings, 1000, first=7)
        start = time.perf_counter()
        bench.queue(limit=50)
        figures["in_process_after_1000_new_s"] = time.perf_counter() - start
        figures.update(inference_rates(bench))
    return figures


def inference_rates(bench) -> dict:
    """Pictures per second: the shared interpreter one at a time, the batch interpreter (64 at a time)."""
    from mnist_hitl.learning.data import load_bundled

    digits = load_bundled().x_train[:2048].astype(np.float32) / 255.0
    bench.predictor.predict_batch(digits[:64])  # make the batch interpreter
    start = time.perf_counter()
    for digit in digits[:500]:
        bench.predictor.predict(digit)
    single = 500 / (time.perf_counter() - start)
    start = time.perf_counter()
    bench.predictor.predict_batch(digits)
    batch = len(digits) / (time.perf_counter() - start)
    return {"single_pictures_per_s": single, "batch_pictures_per_s": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--models", type=Path, help="a models folder with a deployed model (default: train one)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    from mnist_hitl.config import get_settings

    settings = get_settings(home=home_with_model(args.models, prefix="mnist-hitl-queue-", epochs=2))
    figures = {"predictions": args.predictions, "fill_s": fill_store(settings, args.predictions)}
    figures["store_mb"] = settings.db_path.stat().st_size / 1e6
    figures["cli_cold_s"] = time_cli(settings, "queue", "--limit", "50")
    figures["cli_warm_s"] = statistics.median(time_cli(settings, "queue", "--limit", "50") for _ in range(5))
    figures["cli_status_s"] = statistics.median(  # a command's own start-up, for comparison
        _time_status(settings) for _ in range(3)
    )
    figures.update(time_in_process(settings))
    shutil.rmtree(settings.home, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"store: {figures['predictions']:,} predictions stored in {figures['fill_s']:.1f} s"
        f" (one transaction), {figures['store_mb']:.0f} MB"
    )
    print(
        f"mnist-hitl queue --limit 50: cold {figures['cli_cold_s']:.2f} s (scores every prediction),"
        f" warm {figures['cli_warm_s']:.2f} s median of 5 (mnist-hitl status alone: {figures['cli_status_s']:.2f} s)"
    )
    print(
        f"Workbench.queue(50) in one process: first call {figures['in_process_first_s']:.2f} s (reads the table),"
        f" warm {figures['in_process_warm_s'] * 1000:.0f} ms,"
        f" after 1,000 new predictions {figures['in_process_after_1000_new_s'] * 1000:.0f} ms"
    )
    print(
        f"inference: one at a time {figures['single_pictures_per_s']:,.0f} pictures/s,"
        f" batches of 64 {figures['batch_pictures_per_s']:,.0f} pictures/s"
    )


def _time_status(settings) -> float:
    command = [str(Path(sys.executable).parent / "mnist-hitl"), "status"]
    start = time.perf_counter()
    subprocess.run(
        command, env={"MNIST_HITL_HOME": str(settings.home), "PATH": "/usr/bin:/bin"}, capture_output=True, check=True
    )
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
