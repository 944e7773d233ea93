"""Confident learning finds labels flipped on purpose among a model's out-of-fold probabilities (no model here)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_hitl.store import Label
from mnist_hitl.workbench.suspects import find_suspects, suspect_ranking, suspects_among


def noisy_set(n: int = 1000, flips: int = 50, seed: int = 0):
    """True digits, a 90%-accurate model's probabilities of them, and labels with ``flips`` of them changed.

    Where the model is wrong it is torn, as a calibrated model is: the truth keeps a good share.
    """
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, n)
    believed = np.where(rng.random(n) < 0.9, truth, rng.integers(0, 10, n))  # the model's own mistakes
    probabilities = rng.dirichlet(np.ones(10) * 0.3, n) * 0.3
    probabilities[np.arange(n), believed] += np.where(believed == truth, 0.7, 0.4)
    probabilities[np.arange(n), truth] += np.where(believed == truth, 0.0, 0.3)
    labels = truth.copy()
    flipped = rng.choice(n, flips, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, 10, flips)) % 10
    return labels, probabilities, flipped


def test_the_flipped_labels_are_found_and_most_of_what_is_flagged_was_flipped():
    labels, probabilities, flipped = noisy_set()
    suspects = find_suspects(labels, probabilities)
    found = np.isin(flipped, suspects).mean()
    precision = np.isin(suspects, flipped).mean()
    assert found >= 0.8 and precision >= 0.5, (found, precision)


def test_the_ranking_puts_the_flips_first_and_keeps_every_label_once():
    labels, probabilities, flipped = noisy_set()
    ranking = suspect_ranking(labels, probabilities)
    assert sorted(ranking.tolist()) == list(range(len(labels)))
    assert np.isin(flipped, ranking[: 2 * len(flipped)]).mean() >= 0.8


def test_a_suspect_says_what_was_given_and_what_the_model_believes():
    labels, probabilities, flipped = noisy_set(n=200, flips=10, seed=1)
    rows = [Label(i + 100, i + 1, int(digit), "correct", "then", "ada") for i, digit in enumerate(labels)]
    suspects = suspects_among(rows, probabilities)
    first = suspects[0]
    position = first.prediction_id - 1
    assert first.label == labels[position] and first.reviewer == "ada" and first.label_id == position + 100
    assert first.model_label == int(np.argmax(probabilities[position])) != first.label
    assert first.model_probability > first.label_probability
    assert "labelled" in first.reason("out-of-fold") and "believes" in first.reason("out-of-fold")


def test_one_digit_alone_has_no_suspects_and_bad_input_is_refused():
    probabilities = np.full((5, 10), 0.1)
    assert find_suspects([3] * 5, probabilities).tolist() == []
    with pytest.raises(ValueError, match="shape"):
        find_suspects([3, 4], probabilities)
    with pytest.raises(ValueError, match="0-9"):
        find_suspects([3, 4, 5, 6, 10], probabilities)
