"""Benchmark: a soak of the HTTP API, so a leak shows as a slope: memory, file descriptors and latency over time.

Serves ``mnist-hitl api`` from a temporary home holding a copy of the deployed model (or a
freshly trained one) and sends it mixed traffic at a steady rate, as people and scripts do:
predictions, corrections and confirmations of them, the review queue, health checks. Every
``--cycle-every`` minutes a learning cycle runs beside it (``mnist-hitl cycle --force-retrain``,
niced; its size follows the usual settings, e.g. ``MNIST_HITL_TRIALS``), so the API also sees
its model replaced. Each ``--interval`` seconds it prints the API's RSS and PSS (its process
tree), its open file descriptors, requests, errors and p50/p99 latency of the interval; at the
end the first and last interval, and the slope of each per hour (least squares over the
intervals). Writes ``bench/results/soak.json``; asserts nothing.

    .venv/bin/python bench/soak.py [--minutes 60] [--interval 60] [--cycle-every 5] [--rate 20] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from support import deployed_models, home_with_model, machine, report, write_results

CLI = str(Path(sys.executable).parent / "mnist-hitl")
# What a request does, with its share of the traffic.
MIX = {"predict": 0.45, "correct": 0.15, "confirm": 0.15, "queue": 0.1, "health": 0.15}
HEADER = {"minute": 6, "rss_mb": 7, "pss_mb": 7, "fds": 4, "requests": 8, "errors": 6, "p50_ms": 7, "p99_ms": 7}
SLOPES = ("rss_mb", "pss_mb", "open_files", "p50_ms", "p99_ms")


class Traffic:
    """Client threads sending the mix at ``rate`` requests per second in all; latencies kept per interval."""

    def __init__(self, url: str, clients: int, rate: float) -> None:
        from mnist_hitl.learning.data import load_bundled
        from mnist_hitl.preprocess import encode_png

        self.pictures = [encode_png(picture) for picture in load_bundled().x_test[:200]]
        self.url, self.pause = url, clients / rate
        self.lock, self.running = threading.Lock(), threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.predicted: list[tuple[int, int]] = []  # (prediction id, predicted digit), to label later
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)]

    def start(self) -> None:
        self.running.set()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join(30)

    def take(self) -> tuple[list[float], int]:
        """The latencies (seconds) and errors since the last call."""
        with self.lock:
            taken, self.latencies, errors, self.errors = self.latencies, [], self.errors, 0
        return taken, errors

    def _request(self, client: httpx.Client, kind: str, chooser: random.Random) -> httpx.Response:
        if kind == "health":
            return client.get(f"{self.url}/health/ready")
        if kind == "queue":
            return client.get(f"{self.url}/queue", params={"limit": 20})
        if kind == "predict" or not self.predicted:
            picture = chooser.choice(self.pictures)
            answer = client.post(f"{self.url}/predict", content=picture, headers={"content-type": "image/png"})
            if answer.status_code == 200:
                with self.lock:
                    self.predicted.append((answer.json()["prediction_id"], answer.json()["predicted_label"]))
            return answer
        with self.lock:
            prediction_id, digit = self.predicted.pop(chooser.randrange(len(self.predicted)))
        body = {"label": digit, "kind": "confirm"} if kind == "confirm" else {"label": (digit + 1) % 10}
        return client.post(f"{self.url}/predictions/{prediction_id}/labels", json=body | {"kind": kind})

    def _client(self, number: int) -> None:
        chooser = random.Random(number)
        kinds, weights = list(MIX), list(MIX.values())
        with httpx.Client(timeout=30) as client:
            while self.running.is_set():
                began = time.perf_counter()
                try:
                    ok = self._request(client, chooser.choices(kinds, weights)[0], chooser).is_success
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - began
                with self.lock:
                    self.latencies.append(took)
                    self.errors += not ok
                time.sleep(max(0.0, self.pause - took))


def wait_until_ready(url: str, api: subprocess.Popen, log: Path, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with {api.returncode}: see {log}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not get ready within {within:g} s: see {log}")


def api_tree(pid: int) -> dict:
    """RSS and PSS (MB) and open file descriptors of the API's process and its children."""
    process = psutil.Process(pid)
    rss = pss = files = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
            rss, pss, files = rss + info.rss, pss + info.pss, files + member.num_fds()
        except psutil.NoSuchProcess:
            continue
    return {"rss_mb": rss / 2**20, "pss_mb": pss / 2**20, "open_files": files}


def cycles(home: Path, every_minutes: float, stop: threading.Event, log: Path, done: list[dict]) -> None:
    """Run ``mnist-hitl cycle --force-retrain`` (niced) every ``every_minutes``; ``stop`` ends a running one."""
    environment = {**os.environ, "MNIST_HITL_HOME": str(home)}
    while not stop.wait(every_minutes * 60):
        began = time.monotonic()
        with open(log, "ab") as output:
            cycle = subprocess.Popen(
                ["nice", CLI, "cycle", "--force-retrain"],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its notebook kernels too, when it is stopped
            )
            while cycle.poll() is None:
                if stop.wait(1):
                    os.killpg(cycle.pid, signal.SIGTERM)
                    cycle.wait(60)
                    return
        done.append({"seconds": time.monotonic() - began, "exit": cycle.returncode})
        print(f"cycle {len(done)}: exit {cycle.returncode} after {done[-1]['seconds']:.0f} s", flush=True)


def slope_per_hour(minutes: list[float], values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.array(minutes) / 60, values, 1)[0])


def main() -> None:
    from mnist_hitl.app.command import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--interval", type=float, default=60, help="seconds between rows")
    parser.add_argument("--cycle-every", type=float, default=5, help="minutes between learning cycles (0: none)")
    parser.add_argument("--rate", type=float, default=20, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--home", type=Path, help="a home with a deployed model to copy (default: train one)")
    args = parser.parse_args()
    home = home_with_model(deployed_models(args.home.resolve()) if args.home else None, "mnist-hitl-soak-")
    port = free_port()
    log = home / "soak.log"
    with open(log, "ab") as output:
        api = subprocess.Popen([CLI, "api", "--port", str(port)], stdout=output, stderr=subprocess.STDOUT)
    url, start_ready = f"http://127.0.0.1:{port}", time.monotonic()
    wait_until_ready(url, api, log)
    print(f"api: pid {api.pid} on port {port}, ready after {time.monotonic() - start_ready:.1f} s; log {log}")
    traffic = Traffic(url, args.clients, args.rate)
    stop, done = threading.Event(), []
    cycler = threading.Thread(target=cycles, args=(home, args.cycle_every, stop, log, done), daemon=True)
    rows: list[dict] = []
    began = time.monotonic()
    traffic.start()
    if args.cycle_every > 0:
        cycler.start()
    print(" ".join(f"{name:>{width}}" for name, width in HEADER.items()))
    try:
        while time.monotonic() - began < args.minutes * 60:
            time.sleep(min(args.interval, max(0.0, args.minutes * 60 - (time.monotonic() - began))))
            latencies, errors = traffic.take()
            row = {"minute": (time.monotonic() - began) / 60, **api_tree(api.pid), "requests": len(latencies)}
            row |= {"errors": errors, "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else 0.0}
            row["p99_ms"] = 1000 * float(np.percentile(latencies, 99)) if latencies else 0.0
            rows.append(row)
            print(
                f"{row['minute']:6.1f} {row['rss_mb']:7.1f} {row['pss_mb']:7.1f} {row['open_files']:4d}"
                f" {row['requests']:8d} {errors:6d} {row['p50_ms']:7.1f} {row['p99_ms']:7.1f}",
                flush=True,
            )
    finally:
        traffic.stop()
        stop.set()
        if cycler.is_alive():
            cycler.join(90)
        api.terminate()
        api.wait(30)
    figures = machine() | {"minutes": args.minutes, "rate": args.rate, "cycles": len(done)}
    figures["cycles_failed"] = sum(cycle["exit"] != 0 for cycle in done)
    figures["requests"] = sum(row["requests"] for row in rows)
    figures["errors"] = sum(row["errors"] for row in rows)
    minutes = [row["minute"] for row in rows]
    for key in SLOPES:
        figures[f"{key}_start"], figures[f"{key}_end"] = rows[0][key], rows[-1][key]
        figures[f"{key}_slope_per_hour"] = slope_per_hour(minutes, [row[key] for row in rows])
    print()
    report("soak", figures | {"intervals": len(rows)}, decimals=1)
    write_results("soak", figures | {"intervals": rows, "cycle_runs": done})


if __name__ == "__main__":
    main()
