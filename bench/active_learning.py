"""Benchmark: labels chosen by the review queue against labels chosen at random, round after round.

A shifted population (:func:`mnist_hitl.learning.synthetic.shifted_style`, as in
``bench/replay.py``) is made from the bundled MNIST train split: ``--pool`` drawings are
imported unlabelled (predicted and stored, as ``POST /import`` or ``mnist-hitl import`` do)
and ``--heldout`` more are kept aside. In each round a person labels ``--round-size``
drawings: the first of the review queue (``Workbench.queue``) or drawings picked at
random from the pool; then a learning cycle runs (``run_cycle(force_retrain=True)``, what
a label-count trigger or "Train now" starts). After each round it measures the deployed
model on the held-out drawings and on the MNIST holdout with the app's predictor, and the
time from the round's last label to the new model being deployed. Prints a line per round
and writes ``bench/results/active_learning-<name>.json``; asserts nothing.

It uses only what every version of mnist-hitl since the review queue has (the workbench, the
queue, ``run_cycle``), so an older checkout can be measured the same way:
``PYTHONPATH=<checkout> .venv/bin/python bench/active_learning.py --strategy random ...``.

    .venv/bin/python bench/active_learning.py --strategy queue|random [--rounds 8] [--round-size 25]
        [--seed 0] [--home DIR] [--name NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from support import deployed_models, home_with_model, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=("queue", "random"), required=True)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--round-size", type=int, default=25)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--heldout", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="the random choice's seed (the population is fixed)")
    parser.add_argument(
        "--home", type=Path, help="a home whose deployed model to start from (default: MNIST_HITL_HOME)"
    )
    parser.add_argument("--name", help="the results file's name (default: <strategy>-<seed>)")
    args = parser.parse_args()
    home = home_with_model(deployed_models(args.home), prefix="mnist-hitl-bench-active-")

    from mnist_hitl.config import get_settings
    from mnist_hitl.learning import synthetic
    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.learning.loop.cycle import run_cycle
    from mnist_hitl.model import Predictor
    from mnist_hitl.preprocess import to_mnist
    from mnist_hitl.workbench import Workbench

    settings = get_settings()
    data = load_mnist(settings)
    chosen = np.random.default_rng(0).choice(len(data.y_train), args.pool + args.heldout, replace=False)
    pictures = synthetic.shifted_style(data.x_train[chosen], seed=0)
    truth = data.y_train[chosen]
    heldout = np.stack([to_mnist(p) for p in pictures[args.pool :]]), truth[args.pool :]
    mnist = data.x_test.astype(np.float32) / 255.0, data.y_test

    def accuracy(digits, labels) -> float:
        predictor = Predictor(settings.models_dir)
        return float(np.mean([int(predictor.predict(d)[0].argmax()) == y for d, y in zip(digits, labels)]))

    with Workbench(settings, source="import") as bench:
        true_digit = {bench.predict_picture(p).prediction_id: int(y) for p, y in zip(pictures[: args.pool], truth)}
    rng = np.random.default_rng(args.seed)
    settings_used = {k: v for k, v in os.environ.items() if k.startswith("MNIST_HITL_") and k != "MNIST_HITL_HOME"}
    result_name = f"active_learning-{args.name or f'{args.strategy}-{args.seed}'}"
    rounds = [{"labels": 0, "heldout": accuracy(*heldout), "mnist": accuracy(*mnist)}]
    print(f"start: held-out {rounds[0]['heldout']:.3f}, MNIST {rounds[0]['mnist']:.3f}", flush=True)
    labelled: set[int] = set()
    for number in range(1, args.rounds + 1):
        with Workbench(settings, source="app") as bench:
            if args.strategy == "queue":
                picks = [item.prediction_id for item in bench.queue(limit=args.round_size)]
            else:
                left = sorted(set(true_digit) - labelled)
                picks = [int(i) for i in rng.choice(left, args.round_size, replace=False)]
            for pid in picks:
                said = bench.store.get_prediction(pid).predicted_label
                bench.label(pid, true_digit[pid], "confirm" if said == true_digit[pid] else "correct")
            labelled |= set(picks)
        last_label = time.perf_counter()
        summary = run_cycle(force_retrain=True, settings=settings)
        serving = time.perf_counter() - last_label
        figures = {
            "labels": len(labelled),
            "heldout": accuracy(*heldout),
            "mnist": accuracy(*mnist),
            "outcome": summary["outcome"],
            "seconds_last_label_to_deployed": round(serving, 1),
            "stages": summary.get("seconds"),
            "retrain_stages": summary.get("retrain_seconds"),
            "verdict": summary.get("verdict_reasons"),
        }
        rounds.append(figures)
        result = {"strategy": args.strategy, "seed": args.seed, "settings": settings_used, "rounds": rounds}
        write_results(result_name, result)  # after every round: a long run can be read as it goes
        print(
            f"round {number}: {figures['labels']} labels, held-out {figures['heldout']:.3f}, "
            f"MNIST {figures['mnist']:.3f}, {figures['outcome']} {serving:.0f} s after the last label",
            flush=True,
        )
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
