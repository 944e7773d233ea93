"""The learning curves' table and plot, from ``bench/results/learning_curve.jsonl``; logged to MLflow.

For each population, recipe, strategy and label count: the held-out accuracy's mean over the seeds
with its range, how far that is of the way from the first model to the ceiling (every drawing of the
pool labelled, same recipe, read by the challenger itself whether the gate promoted it or not), and
the worst seed's MNIST holdout change. Writes ``bench/results/learning_curve.md`` and
``learning_curve.png``, and logs both, with one metric per cell, to the MLflow experiment
``mnist-hitl-bench`` (``MLFLOW_TRACKING_URI``, else the home's).

    .venv/bin/python bench/learning_curve_report.py [--no-mlflow] [--recipes blend-third,final-fit]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np
from support import RESULTS

RAW = RESULTS / "learning_curve.jsonl"


def cells(rows: list[dict]) -> dict:
    """(population, recipe, strategy) -> labels -> [(held-out, MNIST change)] over the seeds; plus first models."""
    table: dict = defaultdict(lambda: defaultdict(list))
    first: dict = defaultdict(list)
    for row in rows:
        start = row["rounds"][0]
        first[row["population"]].append(start["heldout"])
        for round_ in row["rounds"][1:]:
            ceiling = row["strategy"] == "all"  # the challenger's own reading, whatever the gate said
            labels = "pool" if ceiling else round_["labels"]
            held = round_["challenger_heldout"] if ceiling else round_["heldout"]
            change = round_["mnist"] - start["mnist"]
            table[row["population"], row["recipe"], row["strategy"]][labels].append((held, change))
    return table, {name: float(np.mean(values)) for name, values in first.items()}


def markdown(table: dict, first: dict) -> str:
    lines = []
    for name in sorted(first):
        ceiling = {
            recipe: np.mean([h for h, _ in table[key]["pool"]])
            for key in table
            for recipe in [key[1]]
            if key[0] == name and key[2] == "all"
        }
        shown = ", ".join(f"{recipe} {value:.1%}" for recipe, value in sorted(ceiling.items()))
        lines += [
            f"\n### {name}: first model {first[name]:.1%}; ceiling (every pool label): {shown or 'not run'}\n",
            "| recipe | strategy | labels | held-out, mean (range) | of the way to the ceiling | "
            "MNIST change, mean (worst) | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        for (pop, recipe, strategy), by_labels in sorted(table.items()):
            if pop != name or strategy == "all":
                continue
            # full-replay and labels-weigh train on the same examples given every pool label: one ceiling serves both
            top = ceiling.get(recipe) or next(iter(ceiling.values()), None)
            for labels, values in sorted(by_labels.items()):
                held = np.array([h for h, _ in values])
                mnist = np.array([m for _, m in values])
                way = f"{(held.mean() - first[name]) / (top - first[name]):.0%}" if top else "-"
                lines.append(
                    f"| {recipe} | {strategy} | {labels} | {held.mean():.1%} ({held.min():.1%}-{held.max():.1%}) | "
                    f"{way} | {mnist.mean():+.1%} ({mnist.min():+.1%}) | {len(values)} |"
                )
    return "\n".join(lines) + "\n"


def plot(table: dict, first: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(first)
    figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for axis, name in zip(axes[0], names):
        for (pop, recipe, strategy), by_labels in sorted(table.items()):
            if pop != name:
                continue
            if strategy == "all":
                ceiling = np.mean([h for h, _ in by_labels["pool"]])
                axis.axhline(ceiling, linestyle="--", color="grey", linewidth=1, label=f"ceiling ({recipe})")
                continue
            counts = sorted(by_labels)
            held = [np.array([h for h, _ in by_labels[n]]) for n in counts]
            xs = [0, *counts]
            means = [first[name], *(h.mean() for h in held)]
            line = axis.plot(xs, means, marker="o", label=f"{strategy} ({recipe})")[0]
            lows, highs = [first[name], *(h.min() for h in held)], [first[name], *(h.max() for h in held)]
            axis.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15)
        axis.set_title(f"{name}: first model {first[name]:.1%}")
        axis.set_xlabel("labels")
        axis.set_ylabel("held-out accuracy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def log_to_mlflow(table: dict, table_path, plot_path) -> str:
    import os

    import mlflow

    from mnist_hitl.config import get_settings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(get_settings().tracking_uri)
    mlflow.set_experiment("mnist-hitl-bench")
    with mlflow.start_run(run_name="learning curve") as run:
        for (pop, recipe, strategy), by_labels in table.items():
            for labels, values in by_labels.items():
                mlflow.log_metric(f"{pop}.{recipe}.{strategy}.{labels}.heldout", float(np.mean([h for h, _ in values])))
        mlflow.log_artifact(str(table_path))
        mlflow.log_artifact(str(plot_path))
        return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--recipes", help="only these recipes (comma-separated) and the ceilings; default: every one")
    args = parser.parse_args()
    rows = [json.loads(line) for line in RAW.read_text().splitlines()]
    if args.recipes:
        rows = [row for row in rows if row["recipe"] in args.recipes.split(",") or row["strategy"] == "all"]
    table, first = cells(rows)
    text = markdown(table, first)
    print(text)
    (RESULTS / "learning_curve.md").write_text(text)
    plot(table, first, RESULTS / "learning_curve.png")
    if not args.no_mlflow:
        print("MLflow run", log_to_mlflow(table, RESULTS / "learning_curve.md", RESULTS / "learning_curve.png"))


if __name__ == "__main__":
    main()
