"""Benchmark: holdout accuracy, training time, and one prediction end to end.

Trains the default model in a temporary home (unless --home points at one with a
deployed model), then times ``Workbench.predict_picture`` (preprocess a 280x280
drawing + LiteRT inference + SQLite write) against Keras ``model.predict`` on the
same picture, in the same run. Prints figures; asserts nothing.

    .venv/bin/python bench/predict_latency.py [--calls 500] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from support import report, temporary_home


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="end-to-end predictions to time")
    parser.add_argument("--keras-calls", type=int, default=100, help="Keras model.predict calls to time")
    parser.add_argument("--home", type=Path, help="a home with a deployed model (default: train one)")
    args = parser.parse_args()

    home = args.home or temporary_home()
    os.environ["MNIST_HITL_HOME"] = str(home)

    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.learning.retrain.training import train_first_model
    from mnist_hitl.model import Predictor
    from mnist_hitl.preprocess import render_strokes, to_mnist
    from mnist_hitl.workbench import Workbench

    settings = get_settings()
    init = train_first_model(settings, progress=False)
    figures: dict[str, object] = {"model_version": init["model_version"], "trained_now": init["trained"]}
    if init["trained"]:
        figures["train_seconds"] = init["train_seconds"]

    data = load_bundled(settings.holdout_size, settings.seed)
    predictor = Predictor(settings.models_dir)
    predicted = np.array([predictor.predict(d / 255.0)[0].argmax() for d in data.x_test])
    figures["holdout_accuracy"] = float((predicted == data.y_test).mean())
    figures["holdout_size"] = int(len(data.y_test))

    drawing = render_strokes([[(80, 60), (200, 60), (120, 230)], [(100, 150), (180, 150)]])
    with Workbench(settings, source="bench") as bench:
        bench.predict_picture(drawing)  # warm-up
        end_to_end = []
        for _ in range(args.calls):
            start = time.perf_counter()
            bench.predict_picture(drawing)
            end_to_end.append((time.perf_counter() - start) * 1000)
    stages = {"preprocess": [], "infer": []}
    for _ in range(args.calls):
        start = time.perf_counter()
        digit = to_mnist(drawing)
        middle = time.perf_counter()
        predictor.predict(digit)
        stages["preprocess"].append((middle - start) * 1000)
        stages["infer"].append((time.perf_counter() - middle) * 1000)

    from mnist_hitl.learning.retrain.deployment import deployed_keras_path
    from mnist_hitl.learning.retrain.network import load_model

    keras_model = load_model(deployed_keras_path(settings))
    x = to_mnist(drawing).reshape(1, 28, 28, 1)
    keras_model.predict(x, verbose=0)
    keras_times = []
    for _ in range(args.keras_calls):
        start = time.perf_counter()
        keras_model.predict(x, verbose=0)
        keras_times.append((time.perf_counter() - start) * 1000)

    figures.update(
        {
            "end_to_end_ms_p50": _percentile(end_to_end, 50),
            "end_to_end_ms_p99": _percentile(end_to_end, 99),
            "end_to_end_calls": args.calls,
            "preprocess_ms_p50": statistics.median(stages["preprocess"]),
            "litert_infer_ms_p50": statistics.median(stages["infer"]),
            "keras_predict_ms_p50": _percentile(keras_times, 50),
            "keras_predict_calls": args.keras_calls,
        }
    )
    figures["speedup_keras_p50_over_end_to_end_p50"] = figures["keras_predict_ms_p50"] / figures["end_to_end_ms_p50"]

    report("predict_latency", figures, decimals=4)


if __name__ == "__main__":
    main()
