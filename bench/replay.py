"""Benchmark: does the learning loop learn? Replay a shifted population through the real system.

A population of digits in a style the first model reads badly is made from the
bundled MNIST train split with a fixed seed (:func:`mnist_hitl.synthetic.shifted_style`:
thicker strokes, rotation, slant, elastic distortion, placed anywhere on a
280x280 canvas; each drawing then goes through ``preprocess.to_mnist`` like an
app drawing). Part of it is replayed through the system as a user would: each
drawing is predicted (``Workbench.predict_picture``), the wrong ones corrected
and the right ones confirmed (``Workbench.label``). Then one learning cycle runs
(``run_cycle``, what ``mnist-hitl cycle`` runs) and the rest of the
population, never shown to the system, measures the lift. Accuracies are read
with the fast predictor the app uses, before and after. Prints figures and
writes ``bench/results/replay.json``; asserts nothing.

    .venv/bin/python bench/replay.py [--replay 300] [--heldout 1000] [--home DIR] [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from support import temporary_home, write_results


def accuracy(predictor, digits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the deployed model (fast predictor) on preprocessed 28x28 digits."""
    predicted = np.array([int(predictor.predict(d)[0].argmax()) for d in digits])
    return float((predicted == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", type=int, default=300, help="drawings replayed (predicted, then labelled)")
    parser.add_argument("--heldout", type=int, default=1000, help="drawings kept aside to measure the lift")
    parser.add_argument("--seed", type=int, default=0, help="seed of the population")
    parser.add_argument(
        "--home",
        type=Path,
        help="a home whose deployed model is the starting point "
        "(its models folder is copied; default: train the first model in a temporary home)",
    )
    parser.add_argument("--trials", type=int, help="Optuna trials (default: the retrain notebook's)")
    parser.add_argument("--final-epochs", type=int, help="final training epochs (default: the notebook's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    work = temporary_home("mnist-hitl-replay-")
    home = work / "home"
    if args.home:
        shutil.copytree(Path(args.home) / "models", home / "models")
    os.environ["MNIST_HITL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from mnist_hitl.config import get_settings
    from mnist_hitl.learning import synthetic
    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.learning.loop.cycle import run_cycle
    from mnist_hitl.learning.retrain.training import train_first_model
    from mnist_hitl.model import Predictor, deployed_model
    from mnist_hitl.preprocess import to_mnist
    from mnist_hitl.workbench import Workbench

    settings = get_settings()
    figures: dict[str, object] = {}
    if args.home:
        figures["first_model"] = {"version": deployed_model(settings.models_dir).version, "trained_now": False}
    else:
        init = train_first_model(settings, progress=False)
        figures["first_model"] = {
            "version": init["model_version"],
            "trained_now": True,
            "train_seconds": init["train_seconds"],
        }

    data = load_mnist(settings)
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(data.y_train), args.replay + args.heldout, replace=False)
    start = time.perf_counter()
    pictures = synthetic.shifted_style(data.x_train[chosen], seed=args.seed)
    labels = data.y_train[chosen]
    figures["population"] = {
        "replayed": args.replay,
        "heldout": args.heldout,
        "seed": args.seed,
        "source": "bundled MNIST train split, redrawn by synthetic.shifted_style",
        "generate_seconds": round(time.perf_counter() - start, 1),
    }
    replay_pictures, replay_labels = pictures[: args.replay], labels[: args.replay]
    heldout_digits = np.stack([to_mnist(p) for p in pictures[args.replay :]])
    heldout_labels = labels[args.replay :]
    mnist_digits = data.x_test.astype(np.float32) / 255.0

    before = Predictor(settings.models_dir)
    figures["before"] = {
        "model_version": before.version,
        "shifted_heldout_accuracy": accuracy(before, heldout_digits, heldout_labels),
        "mnist_holdout_accuracy": accuracy(before, mnist_digits, data.y_test),
    }

    corrections = confirmations = 0
    start = time.perf_counter()
    with Workbench(settings, source="replay") as bench:
        for picture, label in zip(replay_pictures, replay_labels):
            result = bench.predict_picture(picture)
            if result.predicted_label == int(label):
                bench.label(result.prediction_id, int(label), "confirm")
                confirmations += 1
            else:
                bench.label(result.prediction_id, int(label), "correct")
                corrections += 1
    figures["replay"] = {
        "corrections": corrections,
        "confirmations": confirmations,
        "first_model_accuracy_on_replayed": confirmations / max(1, args.replay),
        "seconds": round(time.perf_counter() - start, 1),
    }

    retrain_params = {k: v for k, v in (("n_trials", args.trials), ("final_epochs", args.final_epochs)) if v}
    start = time.perf_counter()
    summary = run_cycle(settings=settings, retrain_params=retrain_params)
    wall = time.perf_counter() - start
    inner = summary.get("retrain_seconds") or {}
    stages = dict(summary.get("seconds", {}))
    if "retrain" in stages and inner:
        stages["retrain.kernel_start_and_imports"] = round(stages["retrain"] - sum(inner.values()), 1)
        stages.update({f"retrain.{k}": v for k, v in inner.items()})
    figures["cycle"] = {
        "outcome": summary["outcome"],
        "wall_seconds": round(wall, 1),
        "stages": stages,
        "reasons": summary.get("reasons"),
        "verdict": summary.get("verdict_reasons"),
        "model_version": summary.get("model_version"),
    }

    after = Predictor(settings.models_dir)
    figures["after"] = {
        "model_version": after.version,
        "shifted_heldout_accuracy": accuracy(after, heldout_digits, heldout_labels),
        "mnist_holdout_accuracy": accuracy(after, mnist_digits, data.y_test),
    }
    figures["lift_points"] = round(
        100 * (figures["after"]["shifted_heldout_accuracy"] - figures["before"]["shifted_heldout_accuracy"]), 1
    )
    figures["mnist_change_points"] = round(
        100 * (figures["after"]["mnist_holdout_accuracy"] - figures["before"]["mnist_holdout_accuracy"]), 1
    )

    print(
        f"shifted population, held out ({args.heldout}): "
        f"{figures['before']['shifted_heldout_accuracy']:.3f} -> {figures['after']['shifted_heldout_accuracy']:.3f}"
        f" ({figures['lift_points']:+.1f} points)"
    )
    print(
        f"MNIST holdout ({len(data.y_test)}): {figures['before']['mnist_holdout_accuracy']:.3f} -> "
        f"{figures['after']['mnist_holdout_accuracy']:.3f} ({figures['mnist_change_points']:+.1f} points)"
    )
    print(f"replayed {args.replay}: {corrections} corrections, {confirmations} confirmations")
    print(f"cycle: {summary['outcome']} in {wall:.1f} s")
    for name, seconds in stages.items():
        print(f"  {name:<36} {seconds:7.1f} s")
    for reason in summary.get("verdict_reasons") or []:
        print(f"  {reason}")

    write_results("replay", figures)
    print(json.dumps(figures))
    if args.keep:
        print(f"home kept at {home}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
