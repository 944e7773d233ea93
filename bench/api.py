"""Benchmark: ``POST /predict`` of the HTTP API under 8 concurrent keep-alive clients.

Serves ``mnist-hitl api`` with 1 and then 2 uvicorn workers from a temporary home holding a
copy of the deployed model (or a freshly trained one), and, as the baseline, the seed's
design: a FastAPI route calling Keras ``model.predict`` per request, in a process of its own
(it imports TensorFlow; the API never does). Each client posts ``--requests`` bundled MNIST
digits as PNG bodies. Each API setting also runs with one client, whose latency is the
server's time plus one round trip, without queueing behind the other clients. Prints p50 /
p99 latency, requests/s, errors and (for the API) rows stored; writes
``bench/results/api.json``; asserts nothing.

    .venv/bin/python bench/api.py [--home DIR] [--clients 8] [--requests 150]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from support import deployed_models, home_with_model, write_results


def keras_app():
    """The baseline: the seed's route, Keras ``model.predict`` on every request, nothing stored."""
    import keras
    import numpy as np

    from mnist_hitl.config import get_settings
    from mnist_hitl.model import deployed_model
    from mnist_hitl.preprocess import decode_image, to_mnist

    model = keras.models.load_model(deployed_model(get_settings().models_dir).keras_path)
    app = FastAPI()

    @app.get("/health/ready")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        digit = to_mnist(decode_image(await request.body()))
        probabilities = model.predict(digit.reshape(1, 28, 28, 1), verbose=0)[0]
        return {"predicted_label": int(np.argmax(probabilities)), "probabilities": probabilities.tolist()}

    return app


def start(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"{command} did not get ready")


def load(url: str, pictures: list[bytes], clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(number: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for step in range(requests):
                body = pictures[(number * requests + step) % len(pictures)]
                start_time = time.perf_counter()
                answer = http.post("/predict", content=body, headers={"content-type": "image/png"})
                mine.append((time.perf_counter() - start_time) * 1000)
                if answer.status_code != 200:
                    with lock:
                        errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "requests_per_s": round(len(latencies) / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home whose deployed model to copy (default: MNIST_HITL_HOME)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=150, help="per client (the single client sends 1,000)")
    args = parser.parse_args()
    home = home_with_model(deployed_models(args.home), prefix="mnist-hitl-bench-api-")
    from mnist_hitl.app.command import free_port
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png

    pictures = [encode_png(digit) for digit in load_bundled().x_test[:200]]
    runs = {}
    mnist_hitl = str(Path(sys.executable).parent / "mnist-hitl")
    for workers in (1, 2):
        port = free_port()
        server = start([mnist_hitl, "api", "--port", str(port), "--workers", str(workers)], port)
        try:
            for clients, requests in ((args.clients, args.requests), (1, 1000)):
                before = _rows(home)
                figures = load(f"http://127.0.0.1:{port}", pictures, clients, requests)
                figures["rows_stored"] = _rows(home) - before
                name = f"api, {workers} worker{'s' * (workers > 1)}, {clients} client{'s' * (clients > 1)}"
                runs[name] = figures
                print(f"{name}: {figures}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    port = free_port()
    baseline = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api:keras_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--app-dir",
            str(Path(__file__).parent),
        ],
        port,
    )
    try:
        runs[f"baseline: Keras model.predict per request, {args.clients} clients"] = load(
            f"http://127.0.0.1:{port}", pictures, args.clients, args.requests
        )
    finally:
        baseline.terminate()
        baseline.wait(timeout=30)
    for name, figures in runs.items():
        print(f"{name:45s} {figures}")
    write_results("api", {"cpus": os.cpu_count(), **runs})


def _rows(home: Path) -> int:
    with sqlite3.connect(home / "store.sqlite") as connection:
        return connection.execute("SELECT COUNT(*) FROM predictions WHERE source = 'api'").fetchone()[0]


if __name__ == "__main__":
    main()
