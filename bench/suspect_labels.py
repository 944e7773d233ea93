"""Benchmark: how many wrong labels the suspect queue finds, and how many of what it shows are wrong.

Takes the 5,000 bundled MNIST digits, changes 5% and 10% of their labels (at random: any other
digit; "confusable": 4<->9, 3<->5, 7<->1, drawn among those digits), computes out-of-fold
probabilities on the noisy labels (5 folds, each digit scored by a model trained without it: a
scikit-learn logistic regression on the pixels by default, ``--model mlp`` for a small neural
network), and ranks the labels as the suspect queue does (:func:`mnist_hitl.workbench.suspects.
suspect_ranking`: the labels confident learning flags, then the rest by label quality). Prints,
per condition, recall and precision at the top 10% of the ranking and at the top k (k: the number
of labels changed, where recall equals precision), and of the flagged set alone. Goal at 5% noise:
recall >= 80% in the top 10%, precision >= 50%. With several seeds (each a new injection and new
folds), a last table gives each figure's mean and its spread (the smallest and largest). Asserts nothing.

    nice .venv/bin/python bench/suspect_labels.py [--model lr|mlp] [--rates 0.05,0.1] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from support import machine, write_results

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.workbench.suspects import find_suspects, suspect_ranking

CONFUSABLE = {4: 9, 9: 4, 3: 5, 5: 3, 7: 1, 1: 7}


def inject(labels: np.ndarray, rate: float, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The labels with ``rate`` of them changed, and the positions changed."""
    noisy = labels.copy()
    candidates = np.arange(len(labels)) if kind == "random" else np.flatnonzero(np.isin(labels, list(CONFUSABLE)))
    changed = rng.choice(candidates, round(rate * len(labels)), replace=False)
    if kind == "random":
        noisy[changed] = (labels[changed] + rng.integers(1, 10, len(changed))) % 10
    else:
        noisy[changed] = [CONFUSABLE[int(digit)] for digit in labels[changed]]
    return noisy, changed


def out_of_fold(pixels: np.ndarray, labels: np.ndarray, model: str, seed: int) -> np.ndarray:
    """Each digit's probabilities from a model trained on the other four folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neural_network import MLPClassifier

    estimator = (
        LogisticRegression(C=0.05, max_iter=300)
        if model == "lr"
        else MLPClassifier((256,), alpha=1e-3, max_iter=60, early_stopping=True, random_state=seed)
    )
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return cross_val_predict(estimator, pixels, labels, cv=folds, method="predict_proba")


def scores(ranked: np.ndarray, changed: np.ndarray, top: int) -> dict:
    hits = np.isin(ranked[:top], changed).sum()
    return {"recall": round(hits / len(changed), 4), "precision": round(hits / max(top, 1), 4)}


HEADER = "noise              k | top 10%: recall precision | top k: recall | flagged: n recall precision"


def table_row(row: dict) -> str:
    top, top_k, flagged = row["top_10pct"], row["top_k"], row["flagged"]
    return (
        f"{row['noise']:<15} {row['labels_changed']:>4} | {top['recall']:>14.1%} {top['precision']:>9.1%} |"
        f" {top_k['recall']:>13.1%} | {flagged['count']:>10} {flagged['recall']:>6.1%} {flagged['precision']:>9.1%}"
    )


FIGURES = (("top_10pct", "recall"), ("top_10pct", "precision"), ("top_k", "recall"), ("flagged", "recall"),
           ("flagged", "precision"))  # fmt: skip


def summary(runs: list[dict]) -> dict:
    """Each figure's mean, smallest and largest over the seeds of one condition."""
    return {
        f"{part}.{name}": {
            "mean": round(float(np.mean(values := [run[part][name] for run in runs])), 4),
            "min": min(values),
            "max": max(values),
        }
        for part, name in FIGURES
    }


def summary_row(noise: str, figures: dict) -> str:
    return f"{noise:<15} | " + " | ".join(
        f"{key} {f['mean']:.1%} ({f['min']:.1%}-{f['max']:.1%})" for key, f in figures.items()
    )


def condition(pixels, truth, rate, kind, model, seed) -> dict:
    rng = np.random.default_rng(seed)
    noisy, changed = inject(truth, rate, kind, rng)
    start = time.perf_counter()
    probabilities = out_of_fold(pixels, noisy, model, seed)
    fitted = time.perf_counter() - start
    ranked, flagged = suspect_ranking(noisy, probabilities), find_suspects(noisy, probabilities)
    return {
        "noise": f"{rate:.0%} {kind}",
        "seed": seed,
        "labels_changed": len(changed),
        "model_accuracy_on_truth": round(float(np.mean(probabilities.argmax(axis=1) == truth)), 4),
        "top_10pct": scores(ranked, changed, round(0.1 * len(truth))),
        "top_k": scores(ranked, changed, len(changed)),
        "flagged": {"count": len(flagged), **scores(flagged, changed, len(flagged))},
        "out_of_fold_seconds": round(fitted, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("lr", "mlp"), default="lr")
    parser.add_argument("--rates", default="0.05,0.1")
    parser.add_argument("--seeds", default="0", help="one run of every condition per seed, e.g. 0,1,2")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    data = load_bundled()
    pixels = np.concatenate([data.x_train, data.x_test]).reshape(-1, 28 * 28) / np.float32(255)
    truth = np.concatenate([data.y_train, data.y_test]).astype(np.int64)
    results, summaries = [], {}
    print(HEADER)
    for rate in (float(r) for r in args.rates.split(",")):
        for kind in ("random", "confusable"):
            runs = []
            for seed in seeds:
                runs.append(condition(pixels, truth, rate, kind, args.model, seed))
                print(f"{table_row(runs[-1])} | seed {seed}", flush=True)
            results += runs
            summaries[runs[0]["noise"]] = summary(runs)
    if len(seeds) > 1:
        print(f"\nmean (smallest-largest) over seeds {args.seeds}")
        for noise, figures in summaries.items():
            print(summary_row(noise, figures))
    figures = {
        "digits": len(truth),
        "out_of_fold": f"5 folds, {'logistic regression on pixels' if args.model == 'lr' else 'MLP (256) on pixels'}",
        "seeds": seeds,
        "conditions": results,
        "summary": summaries,
        **machine(),
    }
    print(f"written: {write_results('suspect_labels', figures)}")


if __name__ == "__main__":
    main()
