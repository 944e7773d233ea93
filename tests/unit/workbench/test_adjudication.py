"""Which drawings a retraining holds out, from hand-made label histories: disputes, decisions, suspects set aside."""

from __future__ import annotations

from dataclasses import replace

from mnist_hitl.learning.retrain.promotion import Comparison, Scores, held_out_reasons, promotion_rule
from mnist_hitl.store import ADJUDICATE, UNDO, UNKNOWN_REVIEWER, Label
from mnist_hitl.workbench.adjudication import dispute_reason, disputes
from mnist_hitl.workbench.suspects import Suspect, unreviewed_suspects


def history(*rows: tuple) -> list[Label]:
    """Labels from ``(prediction_id, digit, kind, reviewer)`` rows, ids in the order given."""
    return [
        Label(i, pid, None if kind == UNDO else digit, kind, f"t{i}", reviewer)
        for i, (pid, digit, kind, reviewer) in enumerate(rows, start=1)
    ]


def suspect(prediction_id: int, label_id: int, digit: int) -> Suspect:
    return Suspect(prediction_id, label_id, digit, "ada", (digit + 1) % 10, 0.9, 0.05, [0.1] * 10)


def test_two_reviewers_giving_different_digits_dispute_the_drawing_and_agreeing_ones_do_not():
    labels = history(
        (1, 3, "correct", "ada"),
        (1, 5, "correct", "bob"),  # drawing 1: ada 3, bob 5
        (2, 7, "confirm", "ada"),
        (2, 7, "confirm", "bob"),  # drawing 2: both 7
        (3, 4, "correct", "ada"),
        (3, 9, "correct", "ada"),  # drawing 3: one reviewer changing her mind is no dispute
    )
    found = disputes(labels)
    assert list(found) == [1]
    assert [(label.reviewer, label.label) for label in found[1]] == [("ada", 3), ("bob", 5)]
    assert dispute_reason(found[1]) == (
        "disputed: 3 by ada (correct, label 1); 5 by bob (correct, label 2); decide with a label of kind adjudicate"
    )


def test_each_reviewers_latest_label_counts_and_an_undone_one_counts_for_nobody():
    changed_her_mind = history((1, 3, "correct", "ada"), (1, 5, "correct", "bob"), (1, 5, "correct", "ada"))
    assert disputes(changed_her_mind) == {}
    undone = history((1, 3, "correct", "ada"), (1, 5, "correct", "bob"), (1, None, UNDO, "bob"))
    assert disputes(undone) == {}
    unattributed = history((1, 3, "correct", UNKNOWN_REVIEWER), (1, 5, "correct", "ada"))
    assert disputes(unattributed) == {}  # no one person's: the app's label corrected from the CLI is no dispute


def test_an_adjudication_decides_the_labels_before_it_until_a_later_label_disagrees():
    disputed = [(1, 3, "correct", "ada"), (1, 5, "correct", "bob")]
    decided = history(*disputed, (1, 5, ADJUDICATE, "eve"))
    assert disputes(decided) == {}
    agreeing_later = history(*disputed, (1, 5, ADJUDICATE, "eve"), (1, 5, "confirm", "max"))
    assert disputes(agreeing_later) == {}
    reopened = history(*disputed, (1, 5, ADJUDICATE, "eve"), (1, 3, "correct", "max"))
    assert [(label.kind, label.label) for label in disputes(reopened)[1]] == [(ADJUDICATE, 5), ("correct", 3)]
    decision_undone = history(*disputed, (1, 5, ADJUDICATE, "eve"), (1, None, UNDO, "eve"))
    assert list(disputes(decision_undone)) == [1]
    by_one_of_them = history(*disputed, (1, 3, ADJUDICATE, "bob"))  # bob's decision replaces his own label
    assert disputes(by_one_of_them) == {}
    by_someone_unnamed = history(*disputed, (1, 3, ADJUDICATE, UNKNOWN_REVIEWER))  # a decision, whoever gives it
    assert disputes(by_someone_unnamed) == {}


def test_a_suspect_is_set_aside_until_anyone_labels_its_drawing_again():
    labels = history(
        (1, 3, "correct", "ada"),  # label 1, flagged
        (2, 4, "correct", "ada"),  # label 2, flagged
        (3, 8, "correct", "ada"),  # label 3, flagged
        (2, 4, "confirm", "bob"),  # someone looked at drawing 2 again: the same digit clears it
        (3, None, UNDO, "ada"),  # an undo is a look too
        (4, 1, "correct", "ada"),  # label 6, not flagged
    )
    stored = [suspect(1, 1, 3), suspect(2, 2, 4), suspect(3, 3, 8)]
    assert unreviewed_suspects(stored, labels) == {1}
    assert unreviewed_suspects([], labels) == set()
    assert unreviewed_suspects(stored, labels[:1]) == {1}  # a cycle reading up to label 1: only drawing 1's
    assert unreviewed_suspects(stored, labels[:3]) == {1, 2, 3}
    flagged_after_a_look = replace(stored[0], looked_again=True)  # its label was given after an earlier flag
    assert unreviewed_suspects([flagged_after_a_look], labels) == set()


def scores(users: float) -> Scores:
    return Scores(0.99, users, {}, {})


def test_the_verdict_says_what_was_held_out_and_nothing_when_nothing_was():
    plain = Comparison(scores(0.9), scores(0.8), 1000, 40, 3, 3, 1, 5)
    before = promotion_rule(plain)
    assert held_out_reasons(plain) == [] and len(before.reasons) == 2
    held = Comparison(scores(0.9), scores(0.8), 1000, 40, 3, 3, 1, 5)
    held.users_disputed_held_out, held.users_suspects_set_aside = 3, 1
    verdict = promotion_rule(held)
    assert verdict.promote == before.promote and verdict.reasons[:2] == before.reasons
    assert verdict.reasons[2:] == [
        "3 disputed drawings held out of training and judging until adjudicated"
        " (mnist-hitl queue --strategy adjudicate)",
        "1 suspect label set aside until someone looks at it again (mnist-hitl queue --strategy suspect)",
    ]
