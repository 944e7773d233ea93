"""How far the team's reviewers agree: Cohen's kappa per pair, Krippendorff's alpha for all, per digit.

Computed from the store's label history: each reviewer's latest label of each drawing (a label
that was undone counts for nobody). Kappa (scikit-learn's ``cohen_kappa_score``) is over the
drawings both of a pair labelled; alpha (the ``krippendorff`` package, nominal) over every drawing
two or more reviewers labelled, whoever they are, missing labels allowed. Per digit, the specific
agreement: of the pairs of labels given to one drawing, where one says that digit, the share
where the other says it too (2 x both / (2 x both + one)). Labels given before labels named their
reviewer (``unknown``) are no one person's, so they are counted apart and left out of the figures.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from mnist_hitl.store import UNDO, UNKNOWN_REVIEWER, Label


def reviewers_labels(history: Iterable[Label]) -> dict[int, dict[str, int]]:
    """By prediction id, each reviewer's latest digit; a label that was undone counts for nobody.

    Args:
        history: labels in any order (their ids order them); undos included.
    """
    latest: dict[tuple[int, str], Label] = {}
    undone: set[int] = set()
    last: dict[int, Label] = {}  # by prediction: its latest label, which an undo undoes
    for label in sorted(history, key=lambda label: label.id):
        if label.kind == UNDO:
            if (previous := last.get(label.prediction_id)) is not None:
                undone.add(previous.id)
        else:
            latest[label.prediction_id, label.reviewer] = label
        last[label.prediction_id] = label
    drawings: dict[int, dict[str, int]] = defaultdict(dict)
    for (prediction_id, reviewer), label in latest.items():
        if label.id not in undone:
            drawings[prediction_id][reviewer] = int(label.label)
    return dict(drawings)


def reviewers(history: Iterable[Label]) -> list[dict]:
    """Each reviewer (``unknown`` included) with the labels and undos given, the drawings whose label they
    hold now (their latest, not undone), and when they last gave one; the busiest first."""
    history = list(history)
    held = reviewers_labels(history)
    people: dict[str, dict] = {}
    for label in sorted(history, key=lambda label: label.id):
        person = people.setdefault(label.reviewer, {"reviewer": label.reviewer, "labels": 0, "undos": 0})
        person["undos" if label.kind == UNDO else "labels"] += 1
        person["last_labelled_at"] = label.created_at
    for person in people.values():
        person["drawings"] = sum(person["reviewer"] in given for given in held.values())
    return sorted(people.values(), key=lambda person: (-person["labels"], person["reviewer"]))


def agreement(history: Iterable[Label]) -> dict:
    """The team's agreement, as JSON-ready figures (None where there is nothing to compare, or where every
    label compared is one digit: chance and agreement are then one).

    Returns:
        ``reviewers`` (drawings each labelled), ``unattributed_labels``, ``shared_drawings`` (labelled by
        two or more), ``alpha``, ``kappa`` (one entry per pair that shares a drawing: ``reviewers``,
        ``drawings``, ``agreement``, the share they gave the same digit, and ``kappa``), and
        ``digits`` (per digit: ``drawings`` where someone gave it, ``specific_agreement``).
    """
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
