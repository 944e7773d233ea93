"""Benchmark: how far people's labels move the model on a shifted population, per way of choosing them.

For each population (``bench/populations.py``), strategy, recipe and seed, a new home starts from
the same first model (MNIST alone); the population's 800-drawing pool is imported unlabelled
(predicted and stored, as ``mnist-hitl import`` does) and 1,000 other drawings are held out, never
stored. Then, round after round, a person labels drawings up to ``--labels`` in all, and the
retraining runs after each round and deploys the challenger if the gate promotes it. Strategies:

- ``queue``: the first drawings of the review queue (``Workbench.queue``, its default strategy);
- ``random``: drawings picked at random from the pool;
- ``corrections``: people draw: each drawing of the pool, in a random order, is read by the model
  deployed at the time; a wrong answer is corrected, a right one confirmed one time in five;
- ``all``: every drawing of the pool labelled at once, and the challenger trained on all of them
  (``MNIST_HITL_FINAL_FIT=true``): the ceiling, read with the challenger whatever the gate says.

The retraining is the retrain notebook's, in process: the same library calls (``retrain_data``,
``crossfit.judge``, ``promotion.compare`` and ``promotion_rule``, ``deployment.apply_verdict``)
with the search's middle parameters instead of a search (learning rate 1e-3, dropout 0.3, batch 64,
``MNIST_HITL_FINAL_EPOCHS`` epochs from the champion); no monitor, no papermill, no MLflow. A
recipe is a set of settings: ``final-fit`` (labels a third of the examples beside
a replay of 4,000 MNIST digits, the whole bundled split; a cross-fit judges, a final fit on every label
is deployed), ``full-replay`` (the same with the quick judging, ``MNIST_HITL_FINAL_FIT=false``: one
training that leaves half of the fresh labels out), ``labels-weigh`` (the quick judging beside 2,000
MNIST digits), ``final-fit-share30`` and ``-share50`` (the final fit, with 30% or 50% of the queue
drawn at random: ``MNIST_HITL_QUEUE_RANDOM_SHARE``), ``blend-half`` and ``blend-third`` (the final
fit, each fine-tune keeping half or 30% of the champion's weights: ``MNIST_HITL_CHAMPION_SHARE``;
``blend-third`` is the defaults),
``blend-third-small`` (``blend-third`` beside a replay of 2,000 MNIST digits: three trainings of half the size),
``soup-third`` (``blend-third`` with the fold models' weights averaged instead of the final fit:
``MNIST_HITL_AVERAGE_FOLDS``), ``soup-small`` (the same beside a replay of 2,000 MNIST digits: half the
training) or ``before`` (the learning of commit 37b6094: the whole MNIST split, each label
repeated 5 times, pseudo-labels at 0.99). Every setting a recipe leaves alone is pinned (``PINNED``).
With every label of the pool (the ceiling) the first three
train on the same examples: 800 labels x 5 copies beside 4,000 MNIST digits.

After each round it reads the held-out drawings and the MNIST holdout with the app's predictor,
and appends one line per run to ``bench/results/learning_curve.jsonl`` (a run already there is
skipped). ``bench/learning_curve_report.py`` makes the table and the plot. Asserts nothing.

    .venv/bin/python bench/learning_curve.py --populations shifted,fonts \
        --strategies queue,random,corrections --recipes final-fit --seeds 0,1,2 --labels 25,50
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from populations import population
from support import RESULTS, deployed_models, home_with_model

RAW = RESULTS / "learning_curve.jsonl"
# Every learning setting a recipe leaves alone is pinned here, so a recipe means the same whatever the defaults.
PINNED = {"oversample": 5, "pseudo_confidence": 0.0, "queue_random_share": 0.1, "champion_share": 0.0}
FINAL_FIT = {**PINNED, "replay": 4000, "label_share": 1 / 3, "final_fit": True, "average_folds": False}
RECIPES = {
    "final-fit": FINAL_FIT,
    "final-fit-share30": {**FINAL_FIT, "queue_random_share": 0.3},
    "final-fit-share50": {**FINAL_FIT, "queue_random_share": 0.5},
    "blend-half": {**FINAL_FIT, "champion_share": 0.5},
    "blend-third": {**FINAL_FIT, "champion_share": 0.3},
    "blend-third-small": {**FINAL_FIT, "champion_share": 0.3, "replay": 2000},
    "soup-third": {**FINAL_FIT, "champion_share": 0.3, "average_folds": True},
    "soup-small": {**FINAL_FIT, "champion_share": 0.3, "average_folds": True, "replay": 2000},
    "full-replay": {**FINAL_FIT, "final_fit": False},
    "labels-weigh": {**FINAL_FIT, "final_fit": False, "replay": 2000},
    "before": {**FINAL_FIT, "label_share": 0.0, "replay": 0, "pseudo_confidence": 0.99, "final_fit": False},
}
PARAMS = {"learning_rate": 1e-3, "dropout": 0.3, "batch_size": 64}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", default="shifted,fonts")
    parser.add_argument("--strategies", default="queue,random,corrections")
    parser.add_argument("--recipes", default="final-fit")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", default="25,50,100", help="labels in all after each round")
    parser.add_argument("--models", type=Path, help="a home whose deployed first model every run starts from")
    args = parser.parse_args()
    first = home_with_model(deployed_models(args.models), prefix="mnist-hitl-bench-first-") / "models"
    done = {json.dumps(row["key"]) for row in map(json.loads, RAW.read_text().splitlines())} if RAW.exists() else set()
    totals = [int(n) for n in args.labels.split(",")]
    for seed in map(int, args.seeds.split(",")):  # seed by seed: a run stopped early still has whole sets
        for recipe in args.recipes.split(","):
            for name in args.populations.split(","):
                for strategy in args.strategies.split(","):
                    key = [name, recipe, strategy, seed, totals if strategy != "all" else ["pool"]]
                    if json.dumps(key) in done:
                        continue
                    row = run(name, recipe, strategy, seed, totals, first)
                    RESULTS.mkdir(exist_ok=True)
                    with RAW.open("a") as out:
                        out.write(json.dumps({"key": key, **row}) + "\n")


def run(name: str, recipe: str, strategy: str, seed: int, totals: list[int], first_models: Path) -> dict:
    """One population, recipe, strategy and seed: the first model, then a retraining after each round."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.workbench import Workbench

    home = home_with_model(first_models, prefix="mnist-hitl-bench-curve-")
    ceiling = {"final_fit": True} if strategy == "all" else {}  # every label trains it, every label judges it
    settings = get_settings(home=home, **{**RECIPES[recipe], **ceiling})
    ids, digit_of, pool_digits, held_digits, held_truth = import_pool(settings, name)
    rounds = [{"labels": 0, **_read(settings, held_digits, held_truth)}]
    print(f"{name} {recipe} {strategy} seed {seed}: first model {rounds[0]['heldout']:.3f}", flush=True)
    rng, labelled = np.random.default_rng(seed), set()
    for total in totals if strategy != "all" else [len(ids)]:
        with Workbench(settings, source="app") as bench:
            picks = _choose(strategy, bench, settings, ids, labelled, total - len(labelled), rng, pool_digits, digit_of)
            for pid, kind in picks:
                bench.label(pid, digit_of[pid], kind)
                labelled.add(pid)
        start = time.perf_counter()
        verdict = retrain(settings, seed, held_digits, held_truth)
        rounds.append(
            {
                "labels": len(labelled),
                **_read(settings, held_digits, held_truth),
                "challenger_heldout": verdict["challenger_heldout"],
                "challenger_mnist": verdict["challenger_mnist"],
                "fine_tune_mnist": verdict["fine_tune_mnist"],
                "promoted": verdict["promoted"],
                "reasons": verdict["reasons"],
                "retrain_seconds": round(time.perf_counter() - start, 1),
                "corrections": sum(1 for _, kind in picks if kind == "correct"),
            }
        )
        last = rounds[-1]
        print(
            f"  {last['labels']:4d} labels: held-out {last['heldout']:.3f} MNIST {last['mnist']:.3f} "
            f"{'promoted' if last['promoted'] else 'rejected'} {last['retrain_seconds']:.0f} s",
            flush=True,
        )
    shutil.rmtree(home, ignore_errors=True)
    return {"population": name, "recipe": recipe, "strategy": strategy, "seed": seed, "rounds": rounds}


def import_pool(settings, name: str) -> tuple[list[int], dict, dict, np.ndarray, np.ndarray]:
    """The population's pool imported unlabelled into the home's store (predicted and stored, as ``mnist-hitl
    import`` does), and its held-out drawings, never stored.

    Returns:
        (the pool's prediction ids, their digits by id, their 28x28 digits by id, the held-out 28x28 digits,
        their digits).
    """
    from mnist_hitl.preprocess import to_mnist
    from mnist_hitl.workbench import Workbench

    pool, truth, held, held_truth = population(name)
    held_digits = np.stack([to_mnist(c) for c in held])
    with Workbench(settings, source="import") as bench:
        ids = [bench.predict_picture(c).prediction_id for c in pool]
    return ids, dict(zip(ids, truth.tolist())), dict(zip(ids, (to_mnist(c) for c in pool))), held_digits, held_truth


def _choose(strategy, bench, settings, ids, labelled, count, rng, pool_digits, digit_of) -> list[tuple[int, str]]:
    """``count`` (prediction id, label kind) pairs a person labels in this round, by the strategy."""
    left = [pid for pid in ids if pid not in labelled]
    if strategy in ("random", "all"):
        picks = [int(pid) for pid in rng.choice(left, min(count, len(left)), replace=False)]
    elif strategy == "queue":
        items = bench.queue(limit=count)
        drawn = sum(item.random for item in items)
        print(f"  queue random share {bench.settings.queue_random_share}: {drawn} of {len(items)} drawn", flush=True)
        picks = [item.prediction_id for item in items]
    else:
        return _corrections(settings, left, count, rng, pool_digits, digit_of)
    said = {pid: bench.prediction(pid).predicted_label for pid in picks}
    return [(pid, "confirm" if said[pid] == digit_of[pid] else "correct") for pid in picks]


def _corrections(settings, left, count, rng, pool_digits, digit_of) -> list[tuple[int, str]]:
    """People draw: the deployed model reads each drawing; wrong ones are corrected, 1 in 5 right ones confirmed."""
    from mnist_hitl.model import Predictor

    predictor = Predictor(settings.models_dir)
    picks, right = [], 0
    for pid in rng.permutation(left).tolist():
        said = int(predictor.predict(pool_digits[pid])[0].argmax())
        if said != digit_of[pid]:
            picks.append((pid, "correct"))
        elif right % 5 == 0:
            picks.append((pid, "confirm"))
            right += 1
        else:
            right += 1
        if len(picks) == count:
            break
    return picks


def retrain(settings, seed: int, held_digits: np.ndarray, held_truth: np.ndarray, judged=None) -> dict:
    """The retrain notebook's steps, in process, without a search: train, judge, and deploy if promoted.

    Also reads the held-out drawings with the challenger itself, promoted or not (the ceiling's figure).

    Args:
        judged: ``judged(store, data, challenger, champion, answers)``, called once the challenger is judged and
            before the verdict is applied (where the notebook finds the suspect labels); the dict it returns
            joins the result.
    """
    from mnist_hitl.learning.retrain import crossfit, deployment, labels, network, promotion, search
    from mnist_hitl.store import open_store

    with open_store(settings) as store:
        data = labels.retrain_data(settings, store, None, settings.oversample, 2)
        champion = network.load_model(deployment.deployed_keras_path(settings))
        weights = champion.get_weights()
        data.pseudo = crossfit.champion_pseudo_labels(store, champion, settings.pseudo_confidence)
        params = network.TrainParams(epochs=settings.final_epochs, seed=seed, **PARAMS)
        challenger, answers, judging = crossfit.judge(
            data,
            lambda x, y: search.fit(x, y, params, weights, settings.champion_share),
            network.predict_proba,
            settings.final_fit,
            network.average_weights if settings.average_folds else None,
        )
        comparison = promotion.compare(challenger, champion, data, answers, settings.champion_share)
        verdict = promotion.promotion_rule(comparison, 0.005, 0.05)
        extra = judged(store, data, challenger, champion, answers) if judged is not None else {}
        details = {"through_label_id": data.through_label_id, "data": data.sizes(), "judging": judging}
        deployment.apply_verdict(settings, store, challenger, verdict, comparison, details)
        own = network.evaluate(challenger, held_digits, held_truth)
    network.keras_module().backend.clear_session()
    return {
        "promoted": bool(verdict.promote),
        "reasons": verdict.reasons,
        "challenger_heldout": own,
        "challenger_mnist": comparison.challenger.mnist_holdout,
        "fine_tune_mnist": comparison.fine_tune_mnist_holdout,
        **extra,
    }


def _read(settings, digits: np.ndarray, truth: np.ndarray) -> dict:
    """The deployed model's accuracy on the held-out drawings and on the MNIST holdout (the app's predictor)."""
    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.model import Predictor

    predictor = Predictor(settings.models_dir)
    mnist = load_mnist(settings)
    held = predictor.predict_batch(digits)[0].argmax(axis=1)
    on_mnist = predictor.predict_batch(mnist.x_test.astype(np.float32) / 255.0)[0].argmax(axis=1)
    return {"heldout": float(np.mean(held == truth)), "mnist": float(np.mean(on_mnist == mnist.y_test))}


if __name__ == "__main__":
    main()
