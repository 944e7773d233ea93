"""Benchmark: how much a labeller who is wrong 10% of the time costs the model, with and without the team's checks.

The machinery of ``bench/learning_curve.py``: for each condition and seed a new home starts from the
same first model, the population's 800-drawing pool is imported unlabelled and 1,000 other drawings
are held out; a person labels drawings of the pool picked at random (the same drawings in every
condition of a seed), round after round up to ``--labels``, and the retraining runs in process after
each round (``learning_curve.retrain``: the library's calls, deployed if the gate promotes it). The
labeller's answers are drawn once per seed: each wrong with probability ``--noise`` (another digit at
random), so the noisy conditions of a seed share the same wrong labels. Conditions:

- ``clean``: every label right (the reference);
- ``noisy``: the noisy labeller, as is. The in-process retraining records no suspect labels (only a
  learning cycle does), so none is ever set aside: no suspect queue;
- ``set-aside``: the noisy labeller, and each retraining records the suspects its judging found, as a
  cycle does (``crossfit.out_of_fold_probabilities`` and ``suspect_labels``): the next retraining sets
  them aside, but nobody looks at them;
- ``suspects``: as ``set-aside``, and after each retraining a second, careful reviewer works the suspect
  queue (``Workbench.queue(strategy="suspect")``): the top ``--suspect-share`` of the round's labels
  (10%: 5 of 50), each given its true digit as the Review tab writes an answer to a suspect: of kind
  ``adjudicate``, so it decides the drawing (``workbench.adjudication``), which the next retraining
  trains on with the checker's digit;
- ``second-opinions``: after each round's labels, the careful reviewer gives a blind second opinion
  (its true digit) on every drawing ``Workbench.queue(strategy="second-opinion")`` serves: the labels the
  deployed model doubts and ``MNIST_HITL_SECOND_OPINION_SHARE`` of the rest. A disagreement is a dispute,
  held out of the round's retraining; after it an adjudicator gives every disputed drawing its true digit
  (kind ``adjudicate``), so the next retraining trains on it. No suspects are recorded.

Per round it prints the held-out accuracy and the MNIST holdout's (the deployed model, the app's
predictor), the wrong labels in the retraining's data (the labels that trained or judged the
challenger), and the labels given besides the labeller's (the team's cost); at the end, a table by
condition with the mean and the range over seeds, and ``wrong left``: the wrong labels the next
retraining would use after the people's last checks. Each run is a line of
``bench/results/noisy_labeller.jsonl`` (a run already there is skipped, so processes running other
seeds can append beside it); the table and ``bench/results/noisy_labeller.json`` (the summary and the
runs) are made from every line of the same population, recipe, noise and rounds. Asserts nothing.

    .venv/bin/python bench/noisy_labeller.py --models HOME --seeds 0,1,2 --labels 50,100 \
        --conditions clean,noisy,suspects,second-opinions,set-aside
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
from learning_curve import RECIPES, _choose, _read, import_pool, retrain
from support import RESULTS, deployed_models, home_with_model, machine, write_results

RAW = RESULTS / "noisy_labeller.jsonl"
CONDITIONS = ("clean", "noisy", "set-aside", "suspects", "second-opinions")
LABELLER, CHECKER, ADJUDICATOR = "labeller", "checker", "adjudicator"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", default="shifted")
    parser.add_argument("--recipe", default="labels-weigh", choices=sorted(RECIPES))
    parser.add_argument("--conditions", default="clean,noisy,suspects,second-opinions")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--labels", default="50,100", help="the labeller's labels in all after each round")
    parser.add_argument("--noise", type=float, default=0.1, help="the share of the labeller's labels that are wrong")
    parser.add_argument("--suspect-share", type=float, default=0.1, help="suspects checked: a share of a round")
    parser.add_argument("--models", type=Path, help="a home whose deployed first model every run starts from")
    args = parser.parse_args()
    conditions = args.conditions.split(",")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        parser.error(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITIONS)}")
    started = time.perf_counter()
    first = home_with_model(deployed_models(args.models), prefix="mnist-hitl-bench-first-") / "models"
    totals = [int(n) for n in args.labels.split(",")]
    setup = [args.population, args.recipe, args.noise, args.suspect_share, totals]
    for seed in map(int, args.seeds.split(",")):  # seed by seed: a run stopped early still has whole sets
        for condition in conditions:
            if [*setup, condition, seed] in (row["key"] for row in _runs()):
                continue
            row = run(condition, seed, totals, first, args)
            RESULTS.mkdir(exist_ok=True)
            with RAW.open("a") as out:  # one line a run: processes running other seeds append beside it
                out.write(json.dumps({"key": [*setup, condition, seed], **row}) + "\n")
    runs = [row for row in _runs() if row["key"][: len(setup)] == setup and row["condition"] in conditions]
    rows = summary(runs, conditions)
    figures = {
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "seconds": round(time.perf_counter() - started),
        "summary": rows,
        "runs": runs,
    }
    print_table(rows, totals)
    shutil.rmtree(first.parent, ignore_errors=True)
    written = write_results("noisy_labeller", figures)
    print(f"{len(runs)} runs; this process {figures['seconds'] / 60:.1f} min; written: {written}")


def _runs() -> list[dict]:
    return [json.loads(line) for line in RAW.read_text().splitlines()] if RAW.exists() else []


def answers_of(truth: dict[int, int], noise: float, seed: int) -> dict[int, int]:
    """The noisy labeller's answer for each drawing of the pool: its digit, or another with probability ``noise``."""
    rng = np.random.default_rng([seed, 10])  # not the picks' generator: every condition picks the same drawings
    ids = sorted(truth)
    wrong = rng.random(len(ids)) < noise
    shift = rng.integers(1, 10, len(ids))
    return {pid: (truth[pid] + int(s)) % 10 if w else truth[pid] for pid, w, s in zip(ids, wrong, shift)}


def run(condition: str, seed: int, totals: list[int], first_models: Path, args) -> dict:
    """One condition and seed: the first model, then the labeller's rounds, each followed by a retraining."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.workbench import Workbench

    started = time.perf_counter()
    home = home_with_model(first_models, prefix="mnist-hitl-bench-noisy-")
    settings = get_settings(home=home, **RECIPES[args.recipe])
    ids, truth, pool_digits, held_digits, held_truth = import_pool(settings, args.population)
    answers = truth if condition == "clean" else answers_of(truth, args.noise, seed)
    records_suspects = condition in ("set-aside", "suspects")
    rounds = [{"labels": 0, **_read(settings, held_digits, held_truth)}]
    print(f"{condition} seed {seed}: first model {rounds[0]['heldout']:.3f}", flush=True)
    rng, labelled, extra = np.random.default_rng(seed), set(), {"second_opinions": 0, "adjudications": 0, "suspects": 0}
    for number, total in enumerate(totals, 1):
        with Workbench(settings, source="app") as bench:
            picks = _choose("random", bench, settings, ids, labelled, total - len(labelled), rng, pool_digits, answers)
            for pid, kind in picks:
                bench.label(pid, answers[pid], kind, reviewer=LABELLER)
                labelled.add(pid)
            if condition == "second-opinions":
                extra["second_opinions"] += second_opinions(bench, truth)
        start = time.perf_counter()
        judged = partial(data_figures, truth=truth, record=records_suspects, round_name=f"round {number}")
        verdict = retrain(settings, seed, held_digits, held_truth, judged)
        seconds = time.perf_counter() - start
        with Workbench(settings, source="app") as bench:
            if condition == "suspects":
                extra["suspects"] += check_suspects(bench, truth, round(args.suspect_share * len(picks)))
            if condition == "second-opinions":
                extra["adjudications"] += adjudicate(bench, truth)
        rounds.append(
            {
                "labels": len(labelled),
                "wrong_given": sum(answers[pid] != truth[pid] for pid in labelled),
                **_read(settings, held_digits, held_truth),
                **{k: verdict[k] for k in ("promoted", "challenger_heldout", "data_labels", "data_wrong", "held_out")},
                "suspects_found": verdict.get("suspects_found"),
                "extra_labels": dict(extra),
                "retrain_seconds": round(seconds, 1),
            }
        )
        last = rounds[-1]
        print(
            f"  {last['labels']:4d} labels ({last['wrong_given']} wrong): held-out {last['heldout']:.3f}"
            f" MNIST {last['mnist']:.3f} {'promoted' if last['promoted'] else 'rejected'};"
            f" its data {last['data_labels']} labels, {last['data_wrong']} wrong, held out {last['held_out']};"
            f" extra labels {sum(extra.values())}; {seconds:.0f} s",
            flush=True,
        )
    result = {"condition": condition, "seed": seed, "seconds": round(time.perf_counter() - started), "rounds": rounds}
    result.update(left_over(settings, truth))
    shutil.rmtree(home, ignore_errors=True)
    return result


def data_figures(store, data, challenger, champion, judged_answers, truth, record: bool, round_name: str) -> dict:
    """The retraining's labels and how many are wrong; with ``record``, the suspects its judging found, stored as a
    cycle stores them."""
    from mnist_hitl.learning.retrain import crossfit

    used = data.users_train
    figures = {
        "data_labels": len(used),
        "data_wrong": int(sum(int(y) != truth[int(pid)] for pid, y in zip(used.prediction_ids, used.y))),
        "held_out": {"disputed": len(data.held_out.disputed), "suspects": len(data.held_out.suspects)},
    }
    if record:
        probabilities = crossfit.out_of_fold_probabilities(data, challenger, champion, judged_answers)
        found = crossfit.suspect_labels(store, data, probabilities, round_name, record=True)
        figures["suspects_found"] = {"all": len(found), "wrong": sum(s.label != truth[s.prediction_id] for s in found)}
    return figures


def check_suspects(bench, truth: dict[int, int], count: int) -> int:
    """The careful reviewer gives the top ``count`` suspects their true digit, as a decision (kind ``adjudicate``,
    as the Review tab writes it); returns the labels given."""
    items = bench.queue(limit=count, strategy="suspect", reviewer=CHECKER)
    for item in items:
        bench.label(item.prediction_id, truth[item.prediction_id], "adjudicate", reviewer=CHECKER)
    return len(items)


def second_opinions(bench, truth: dict[int, int]) -> int:
    """The careful reviewer's blind answer on each drawing the second-opinion queue serves; returns the labels given."""
    items = bench.queue(limit=len(truth), strategy="second-opinion", reviewer=CHECKER)
    for item in items:
        pid = item.prediction_id
        bench.label(pid, truth[pid], "confirm" if truth[pid] == item.predicted_label else "correct", reviewer=CHECKER)
    return len(items)


def adjudicate(bench, truth: dict[int, int]) -> int:
    """The adjudicator gives every disputed drawing its true digit; returns the labels given. The queue leases them
    as it does a person's; the checker's labels ended the checker's leases, so every dispute is served at once."""
    items = bench.queue(limit=len(truth), strategy="adjudicate", reviewer=ADJUDICATOR)
    for item in items:
        bench.label(item.prediction_id, truth[item.prediction_id], "adjudicate", reviewer=ADJUDICATOR)
    return len(items)


def left_over(settings, truth: dict[int, int]) -> dict:
    """After the last checks: the labels the next retraining would use, the wrong ones, and those held out."""
    from mnist_hitl.learning.retrain.labels import retraining_labels
    from mnist_hitl.store import open_store

    with open_store(settings) as store:
        usable, held = retraining_labels(store)
    wrong = int(sum(int(y) != truth[int(pid)] for pid, y in zip(usable.prediction_ids, usable.y)))
    return {
        "left_labels": len(usable),
        "left_wrong": wrong,
        "left_held_out": {"disputed": len(held.disputed), "suspects": len(held.suspects)},
    }


def summary(runs: list[dict], conditions: list[str]) -> list[dict]:
    """Per condition, each figure's mean and range over the seeds run."""
    rows = []
    for condition in conditions:
        done = [r for r in runs if r["condition"] == condition]
        if not done:
            continue
        last = [r["rounds"][-1] for r in done]
        rows.append(
            {
                "condition": condition,
                "seeds": [r["seed"] for r in done],
                "heldout": [_spread([r["rounds"][i]["heldout"] for r in done]) for i in range(len(done[0]["rounds"]))],
                "labels": [round_["labels"] for round_ in done[0]["rounds"]],
                "mnist": _spread([x["mnist"] for x in last]),
                "wrong_given": _spread([x["wrong_given"] for x in last]),
                "data_wrong": _spread([x["data_wrong"] for x in last]),
                "left_wrong": _spread([r["left_wrong"] for r in done]),
                "extra_labels": _spread([sum(x["extra_labels"].values()) for x in last]),
                "promoted": [[round_.get("promoted") for round_ in r["rounds"][1:]] for r in done],
            }
        )
    return rows


def _spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}


def print_table(rows: list[dict], totals: list[int]) -> None:
    """The summary as a Markdown table: mean (min-max) over seeds."""

    def cell(figure: dict, percent: bool = False) -> str:
        if percent:
            return f"{100 * figure['mean']:.1f}% ({100 * figure['min']:.1f}-{100 * figure['max']:.1f})"
        return f"{figure['mean']:.1f} ({figure['min']:g}-{figure['max']:g})"

    after = " | ".join(f"held-out after {n}" for n in totals)
    print(
        f"\n| condition | seeds | first model | {after} | MNIST holdout | wrong labels given"
        " | wrong in the last retraining's data | wrong left | extra labels |"
    )
    print("|---" * (8 + len(totals)) + "|")
    for row in rows:
        held = " | ".join(cell(figure, True) for figure in row["heldout"])
        print(
            f"| {row['condition']} | {len(row['seeds'])} | {held} | {cell(row['mnist'], True)}"
            f" | {cell(row['wrong_given'])} | {cell(row['data_wrong'])} | {cell(row['left_wrong'])}"
            f" | {cell(row['extra_labels'])} |"
        )


if __name__ == "__main__":
    main()
