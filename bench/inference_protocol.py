"""Benchmark: the Open Inference Protocol through its standard client, beside the plain JSON routes.

Serves ``mnist-hitl api`` (one worker) from a temporary home holding a copy of the deployed
model (or a freshly trained one) and sends bundled MNIST digits, one client at a time:

- single requests (one digit, ``--requests`` of them): ``tritonclient.http`` with the tensor in
  JSON and in binary (binary tensor data extension, binary answer), the same infer route with a
  plain ``httpx`` JSON post, and ``POST /predict`` with a PNG (preprocessed, stored): p50 / p99 ms;
- batches (``--batch`` digits, ``--batches`` of them): digits/s through the same three ways in.

Prints the figures, writes ``bench/results/inference_protocol.json``; asserts nothing.

    .venv/bin/python bench/inference_protocol.py [--home DIR] [--requests 500] [--batch 256] [--batches 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton
from support import deployed_models, home_with_model, machine, report

INFER = "/v2/models/mnist/infer"


def start_api(port: int):
    import subprocess

    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mnist-hitl"), "api", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("mnist-hitl api did not get ready")


def standard_client(client: triton.InferenceServerClient, binary: bool) -> Callable[[np.ndarray], np.ndarray]:
    def infer(batch: np.ndarray) -> np.ndarray:
        tensor = triton.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
        return client.infer("mnist", [tensor], outputs=wanted).as_numpy("probabilities")

    return infer


def plain_json(http: httpx.Client) -> Callable[[np.ndarray], np.ndarray]:
    def infer(batch: np.ndarray) -> np.ndarray:
        tensor = {"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}
        answer = http.post(INFER, json={"inputs": [tensor]})
        answer.raise_for_status()
        return np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32).reshape(len(batch), 10)

    return infer


def latencies(call: Callable, items: list, repeat: int) -> dict:
    call(items[0])  # a warm connection and a warm model
    times = []
    for number in range(repeat):
        start = time.perf_counter()
        call(items[number % len(items)])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


def throughput(call: Callable[[np.ndarray], np.ndarray], digits: np.ndarray, batch: int, batches: int) -> float:
    call(digits[:batch])
    start = time.perf_counter()
    for number in range(batches):
        first = (number * batch) % (len(digits) - batch)
        call(digits[first : first + batch])
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home whose deployed model to copy (default: MNIST_HITL_HOME)")
    parser.add_argument("--requests", type=int, default=500, help="single requests per way in")
    parser.add_argument("--batch", type=int, default=256, help="digits per batch request (at most 1,024)")
    parser.add_argument("--batches", type=int, default=20, help="batch requests per way in")
    args = parser.parse_args()
    home_with_model(deployed_models(args.home), prefix="mnist-hitl-bench-protocol-")
    from mnist_hitl.app.command import free_port
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png

    bundled = load_bundled()
    digits = bundled.x_test.astype(np.float32) / 255.0
    pictures = [encode_png(digit) for digit in bundled.x_test[:200]]
    port = free_port()
    server = start_api(port)
    figures: dict = {**machine(), "requests": args.requests, "batch": args.batch, "batches": args.batches}
    try:
        url = f"http://127.0.0.1:{port}"
        with triton.InferenceServerClient(f"127.0.0.1:{port}") as client, httpx.Client(base_url=url) as http:
            ways = {
                "tritonclient, JSON tensor": standard_client(client, binary=False),
                "tritonclient, binary tensor": standard_client(client, binary=True),
                "httpx, plain JSON to the infer route": plain_json(http),
            }
            singles = [digits[i : i + 1] for i in range(200)]
            for name, call in ways.items():
                for key, value in latencies(call, singles, args.requests).items():
                    figures[f"single, {name}, {key}"] = value

            def predict(png: bytes) -> None:
                http.post("/predict", content=png, headers={"content-type": "image/png"}).raise_for_status()

            for key, value in latencies(predict, pictures, args.requests).items():
                figures[f"single, POST /predict (PNG, preprocessed and stored), {key}"] = value
            for name, call in ways.items():
                figures[f"batch, {name}, digits/s"] = throughput(call, digits, args.batch, args.batches)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report("inference_protocol", figures, decimals=2)


if __name__ == "__main__":
    main()
