"""The team's agreement from a label history: each reviewer's latest label, undos, pairs, digits, "unknown" apart."""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from mnist_hitl.store import Label
from mnist_hitl.workbench.agreement import (
    agreement,
    agreement_metrics,
    agreement_table,
    quality,
    reviewers,
    reviewers_labels,
)

ids = itertools.count(1)


def given(prediction_id: int, digit: int | None, reviewer: str) -> Label:
    kind = "undo" if digit is None else "correct"
    return Label(next(ids), prediction_id, digit, kind, "then", reviewer)


def test_each_reviewers_latest_label_counts_and_an_undone_one_counts_for_nobody():
    history = [
        given(1, 4, "ada"),
        given(1, 9, "ada"),  # ada changed her mind: 9
        given(1, 9, "bob"),
        given(2, 3, "ada"),
        given(2, 5, "bob"),
        given(2, None, "bob"),  # bob took his 5 back
    ]
    assert reviewers_labels(history) == {1: {"ada": 9, "bob": 9}, 2: {"ada": 3}}


def test_kappa_per_pair_and_alpha_are_the_libraries_figures_on_the_drawings_shared():
    ada = [0, 1, 2, 3, 4, 4, 7, 9]
    bob = [0, 1, 2, 3, 9, 4, 1, 9]
    eve = [0, 1, 2, 5, 4, 4, 7, 9]
    history = [
        given(pid, digit, name) for name, digits in (("ada", ada), ("bob", bob)) for pid, digit in enumerate(digits)
    ]
    history += [given(pid, digit, "eve") for pid, digit in enumerate(eve[:4])]  # eve saw the first four only
    history += [given(100, 3, "unknown"), given(101, 3, "ada")]  # labels from before reviewers were recorded
    figures = agreement(history)
    assert figures["reviewers"] == {"ada": 9, "bob": 8, "eve": 4} and figures["unattributed_labels"] == 1
    assert figures["shared_drawings"] == 8
    pairs = {tuple(pair["reviewers"]): pair for pair in figures["kappa"]}
    assert pairs["ada", "bob"]["drawings"] == 8 and pairs["ada", "bob"]["agreement"] == 0.75
    assert pairs["ada", "bob"]["kappa"] == pytest.approx(cohen_kappa_score(ada, bob), abs=1e-4)
    assert pairs["ada", "eve"]["drawings"] == 4 and pairs["ada", "eve"]["agreement"] == 0.75
    data = np.array([ada, bob, eve[:4] + [np.nan] * 4], dtype=float)
    assert figures["alpha"] == pytest.approx(krippendorff.alpha(data, level_of_measurement="nominal"), abs=1e-4)
    digits = figures["digits"]
    assert digits["0"] == {"drawings": 1, "specific_agreement": 1.0}  # three pairs, all said 0
    # drawing 1: three pairs all said 1; drawing 6: bob said 1, ada 7
    assert digits["1"]["specific_agreement"] == pytest.approx(2 * 3 / (2 * 3 + 1), abs=1e-4)
    assert digits["8"] == {"drawings": 0, "specific_agreement": None}


def test_nothing_shared_or_one_digit_alone_gives_no_figure_rather_than_a_made_up_one():
    alone = agreement([given(1, 4, "ada"), given(2, 4, "bob")])
    assert alone["shared_drawings"] == 0 and alone["alpha"] is None and alone["kappa"] == []
    same = agreement([given(1, 4, "ada"), given(1, 4, "bob")])
    assert same["alpha"] is None and same["kappa"][0]["kappa"] is None and same["kappa"][0]["agreement"] == 1.0


def test_the_cycle_logs_alpha_and_each_pairs_kappa_and_the_notebook_shows_one_row_per_pair_and_the_team():
    ada, bob = [0, 1, 2, 3, 4, 4, 7, 9], [0, 1, 2, 3, 9, 4, 1, 9]
    history = [
        given(100 + pid, digit, name)
        for name, digits in (("ada", ada), ("bob", bob))
        for pid, digit in enumerate(digits)
    ]
    figures = agreement(history)
    kappa = round(cohen_kappa_score(ada, bob), 4)
    assert agreement_metrics(figures) == {
        "agreement_alpha": figures["alpha"],
        "agreement_shared_drawings": 8,
        "kappa.ada.bob": kappa,
    }
    table = agreement_table(figures)
    assert table["reviewers"].tolist() == ["ada & bob", "all (2)"]
    assert table["kappa"].iloc[0] == kappa and table["alpha"].iloc[1] == figures["alpha"]
    assert table["drawings"].tolist() == [8, 8]


def test_each_reviewer_is_scored_against_the_others_majority_a_tie_going_to_the_latest_label():
    history = [
        # drawing 1: ada, bob and eve say 7; cy says 1: the others' majority is 7 for everyone
        given(1, 7, "ada"),
        given(1, 7, "bob"),
        given(1, 7, "eve"),
        given(1, 1, "cy"),
        # drawing 2: ada 3, bob 5: for each, the other's label is the decision
        given(2, 3, "ada"),
        given(2, 5, "bob"),
        # drawing 3: ada 4, bob 9, eve 4: a tie between two others goes to the later of their labels
        given(3, 4, "ada"),
        given(3, 9, "bob"),
        given(3, 4, "eve"),
        # drawing 4: no other named reviewer ("unknown" is no one person): not compared
        given(4, 2, "ada"),
        given(4, 2, "unknown"),
        # drawing 5: bob's label was undone, so ada is alone on it
        given(5, 6, "ada"),
        given(5, 8, "bob"),
        given(5, None, "bob"),
    ]
    scores = quality(history)
    assert scores == {
        "ada": {"drawings": 3, "agreement": round(2 / 3, 4)},  # 1 yes; 2 no; 3: bob 9 vs eve 4, eve's later: yes
        "bob": {"drawings": 3, "agreement": round(1 / 3, 4)},  # 1 yes; 2 no; 3: ada and eve say 4: no
        "eve": {"drawings": 2, "agreement": 0.5},  # 1 yes; 3: ada 4 vs bob 9, bob's later: no
        "cy": {"drawings": 1, "agreement": 0.0},
    }
    assert list(scores) == ["ada", "bob", "eve", "cy"]  # the most compared first
    assert agreement(history)["quality"] == scores
    people = {person["reviewer"]: person for person in reviewers(history)}
    assert (people["ada"]["compared"], people["ada"]["agreement"]) == (3, round(2 / 3, 4))
    assert (people["unknown"]["compared"], people["unknown"]["agreement"]) == (0, None)


def test_an_adjudication_is_the_decided_label_and_its_adjudicator_is_not_scored_on_it():
    history = [
        given(1, 3, "ada"),
        given(1, 5, "bob"),
        given(1, 5, "cy"),  # without the adjudication, the majority would be 5
        Label(next(ids), 1, 3, "adjudicate", "then", "eve"),
        given(2, 3, "ada"),
        given(2, 3, "eve"),
    ]
    scores = quality(history)
    assert scores["ada"] == {"drawings": 2, "agreement": 1.0}
    assert scores["bob"] == {"drawings": 1, "agreement": 0.0} and scores["cy"] == scores["bob"]
    assert scores["eve"] == {"drawings": 1, "agreement": 1.0}  # drawing 2 only: her own decision is not scored
