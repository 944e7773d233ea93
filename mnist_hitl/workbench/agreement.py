"""How far the team's reviewers agree: Cohen's kappa per pair, Krippendorff's alpha for all, per digit.

Computed from the store's label history: each reviewer's latest label of each drawing (a label
that was undone counts for nobody). Kappa (scikit-learn's ``cohen_kappa_score``) is over the
drawings both of a pair labelled; alpha (the ``krippendorff`` package, nominal) over every drawing
two or more reviewers labelled, whoever they are, missing labels allowed. Per digit, the specific
agreement: of the pairs of labels given to one drawing, where one says that digit, the share
where the other says it too (2 x both / (2 x both + one)). Labels given before labels named their
reviewer (``unknown``) are no one person's, so they are counted apart and left out of the figures.

Each reviewer's quality is their agreement with the decided label of the drawings others labelled
too: the adjudication where one holds (a label of kind ``adjudicate``), else the other reviewers'
majority, a tie going to the latest of the tied labels. Scoring a reviewer against a decision their
own label took part in would flatter whoever labels most, and against the latest label alone would
make a drawing's score depend on who happened to come last.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from mnist_hitl.store import ADJUDICATE, UNDO, UNKNOWN_REVIEWER, Label


def reviewers_labels(history: Iterable[Label]) -> dict[int, dict[str, int]]:
    """By prediction id, each reviewer's latest digit; a label that was undone counts for nobody.

    Args:
        history: labels in any order (their ids order them); undos included.
    """
    return {
        pid: {name: int(label.label) for name, label in given.items()} for pid, given in held_labels(history).items()
    }


def held_labels(history: Iterable[Label]) -> dict[int, dict[str, Label]]:
    """By prediction id, each reviewer's latest label, unless an undo took it back.

    Args:
        history: labels in any order (their ids order them); undos included. An undo takes back the
            drawing's latest label, whoever gave it.
    """
    latest: dict[tuple[int, str], Label] = {}
    undone: set[int] = set()
    last: dict[int, Label] = {}
    for label in sorted(history, key=lambda label: label.id):
        if label.kind == UNDO:
            if (previous := last.get(label.prediction_id)) is not None:
                undone.add(previous.id)
        else:
            latest[label.prediction_id, label.reviewer] = label
        last[label.prediction_id] = label
    drawings: dict[int, dict[str, Label]] = defaultdict(dict)
    for (prediction_id, reviewer), label in latest.items():
        if label.id not in undone:
            drawings[prediction_id][reviewer] = label
    return dict(drawings)


def quality(history: Iterable[Label]) -> dict[str, dict]:
    """Each named reviewer's agreement with the decided label of the drawings others labelled too.

    The decided label of a drawing is its latest adjudication that holds (then every other reviewer's
    label of it is compared, ``unknown``'s apart, and the adjudicator's is not); else, for each
    reviewer, the majority digit of the other named reviewers' labels, a tie going to the latest of
    the tied labels (the largest id). A drawing labelled by one named reviewer alone is not compared.

    Returns:
        By reviewer, the most compared first: ``drawings`` compared and ``agreement``, the share where
        their label is the decided one (None: no drawing compared).
    """
    compared: dict[str, int] = defaultdict(int)
    agreeing: dict[str, int] = defaultdict(int)
    people: set[str] = set()
    for held in held_labels(history).values():
        adjudications = [label for label in held.values() if label.kind == ADJUDICATE]
        decision = max(adjudications, key=lambda label: label.id, default=None)
        given = {name: label for name, label in held.items() if name != UNKNOWN_REVIEWER}
        people |= set(given)
        for name, label in given.items():
            if decision is not None:
                if label is decision:
                    continue
                decided = int(decision.label)
            else:
                others = [other for other_name, other in given.items() if other_name != name]
                if not others:
                    continue
                decided = _decided(others)
            compared[name] += 1
            agreeing[name] += int(label.label) == decided
    return {
        name: {
            "drawings": compared[name],
            "agreement": round(agreeing[name] / compared[name], 4) if compared[name] else None,
        }
        for name in sorted(people, key=lambda name: (-compared[name], name))
    }


def _decided(labels: list[Label]) -> int:
    votes: dict[int, int] = defaultdict(int)
    latest: dict[int, int] = {}
    for label in labels:
        votes[int(label.label)] += 1
        latest[int(label.label)] = max(latest.get(int(label.label), 0), label.id)
    return max(votes, key=lambda digit: (votes[digit], latest[digit]))


def reviewers(history: Iterable[Label]) -> list[dict]:
    """Each reviewer (``unknown`` included) with the labels and undos given, the drawings whose label they
    hold now (their latest, not undone), when they last gave one, and their :func:`quality` (``compared``,
    ``agreement``; 0 and None for ``unknown``); the busiest first."""
    history = list(history)
    held = reviewers_labels(history)
    scores = quality(history)
    people: dict[str, dict] = {}
    for label in sorted(history, key=lambda label: label.id):
        person = people.setdefault(label.reviewer, {"reviewer": label.reviewer, "labels": 0, "undos": 0})
        person["undos" if label.kind == UNDO else "labels"] += 1
        person["last_labelled_at"] = label.created_at
    for person in people.values():
        person["drawings"] = sum(person["reviewer"] in given for given in held.values())
        score = scores.get(person["reviewer"], {"drawings": 0, "agreement": None})
        person["compared"], person["agreement"] = score["drawings"], score["agreement"]
    return sorted(people.values(), key=lambda person: (-person["labels"], person["reviewer"]))


def agreement(history: Iterable[Label]) -> dict:
    """The team's agreement, as JSON-ready figures (None where there is nothing to compare, or where every
    label compared is one digit: chance and agreement are then one).

    Returns:
        ``reviewers`` (drawings each labelled), ``unattributed_labels``, ``shared_drawings`` (labelled by
        two or more), ``alpha``, ``kappa`` (one entry per pair that shares a drawing: ``reviewers``,
        ``drawings``, ``agreement``, the share they gave the same digit, and ``kappa``), and
        ``digits`` (per digit: ``drawings`` where someone gave it, ``specific_agreement``), and
        ``quality`` (per reviewer: :func:`quality`).
    """
    history = list(history)
    drawings = reviewers_labels(history)
    unattributed = sum(UNKNOWN_REVIEWER in given for given in drawings.values())
    drawings = {
        pid: {name: digit for name, digit in given.items() if name != UNKNOWN_REVIEWER}
        for pid, given in drawings.items()
    }
    reviewers = sorted({name for given in drawings.values() for name in given})
    shared = {pid: given for pid, given in drawings.items() if len(given) >= 2}
    return {
        "reviewers": {name: sum(name in given for given in drawings.values()) for name in reviewers},
        "unattributed_labels": unattributed,
        "shared_drawings": len(shared),
        "alpha": _alpha(shared, reviewers),
        "kappa": _kappas(shared, reviewers),
        "digits": _per_digit(shared),
        "quality": quality(history),
    }


MAX_REVIEWERS = 50  # Prometheus series per reviewer: the busiest, so that a large team cannot flood it
MAX_PAIRS = 50  # likewise for the pairs' kappa: the pairs that share the most drawings


def team_figures(history: Iterable[Label]) -> dict:
    """What the metrics exporter serves of the team: alpha, shared drawings, the kappa of the (at most
    :data:`MAX_PAIRS`) pairs sharing the most drawings among the (at most :data:`MAX_REVIEWERS`) busiest
    named reviewers, and those reviewers' labels and agreement with the decided labels."""
    history = list(history)
    figures = agreement(history)
    people = [person for person in reviewers(history) if person["reviewer"] != UNKNOWN_REVIEWER][:MAX_REVIEWERS]
    named = {person["reviewer"] for person in people}
    pairs = [pair for pair in figures["kappa"] if set(pair["reviewers"]) <= named and pair["kappa"] is not None]
    return {
        "alpha": figures["alpha"],
        "shared_drawings": figures["shared_drawings"],
        "kappa": sorted(pairs, key=lambda pair: -pair["drawings"])[:MAX_PAIRS],
        "reviewers": [{"reviewer": p["reviewer"], "labels": p["labels"], "agreement": p["agreement"]} for p in people],
    }


def agreement_metrics(figures: dict) -> dict[str, float | None]:
    """The :func:`agreement` figures as flat metrics (for MLflow): ``agreement_alpha``,
    ``agreement_shared_drawings`` and one ``kappa.<first>.<second>`` per pair (None where undefined)."""
    return {
        "agreement_alpha": figures["alpha"],
        "agreement_shared_drawings": figures["shared_drawings"],
        **{"kappa.{}.{}".format(*pair["reviewers"]): pair["kappa"] for pair in figures["kappa"]},
    }


def agreement_table(figures: dict):
    """The :func:`agreement` figures as a small table (a pandas DataFrame): one row per reviewer pair, and
    one for the whole team (Krippendorff's alpha), for a notebook to show."""
    import pandas as pd

    rows = [
        {
            "reviewers": " & ".join(pair["reviewers"]),
            "drawings": pair["drawings"],
            "agreement": pair["agreement"],
            "kappa": pair["kappa"],
            "alpha": None,
        }
        for pair in figures["kappa"]
    ]
    team = {"reviewers": f"all ({len(figures['reviewers'])})", "drawings": figures["shared_drawings"]}
    rows.append({**team, "agreement": None, "kappa": None, "alpha": figures["alpha"]})
    return pd.DataFrame(rows, columns=["reviewers", "drawings", "agreement", "kappa", "alpha"])


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def _alpha(shared: dict[int, dict[str, int]], reviewers: list[str]) -> float | None:
    import krippendorff

    if not shared:
        return None
    data = np.full((len(reviewers), len(shared)), np.nan)
    for column, given in enumerate(shared.values()):
        for name, digit in given.items():
            data[reviewers.index(name), column] = digit
    if len(np.unique(data[~np.isnan(data)])) < 2:  # one digit alone: chance cannot be told from agreement
        return None
    return _number(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def _kappas(shared: dict[int, dict[str, int]], reviewers: list[str]) -> list[dict]:
    from sklearn.metrics import cohen_kappa_score

    pairs = []
    for first, second in itertools.combinations(reviewers, 2):
        both = [(given[first], given[second]) for given in shared.values() if first in given and second in given]
        if not both:
            continue
        a, b = (np.array(side) for side in zip(*both, strict=True))
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")  # one digit alone: kappa is undefined, NaN, answered None
            kappa = cohen_kappa_score(a, b, labels=list(range(10)))
        pairs.append(
            {
                "reviewers": [first, second],
                "drawings": len(both),
                "agreement": _number(float(np.mean(a == b))),
                "kappa": _number(kappa),
            }
        )
    return pairs


def _per_digit(shared: dict[int, dict[str, int]]) -> dict[str, dict]:
    both, one, drawings = np.zeros(10), np.zeros(10), np.zeros(10, dtype=int)
    for given in shared.values():
        for digit in set(given.values()):
            drawings[digit] += 1
        for a, b in itertools.combinations(given.values(), 2):
            if a == b:
                both[a] += 1
            else:
                one[a] += 1
                one[b] += 1
    return {
        str(digit): {
            "drawings": int(drawings[digit]),
            "specific_agreement": _number(2 * both[digit] / (2 * both[digit] + one[digit]))
            if drawings[digit]
            else None,
        }
        for digit in range(10)
    }
