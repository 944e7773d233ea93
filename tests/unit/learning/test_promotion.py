"""The promotion rule, the judging folds, and settling an interrupted promotion (no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_hitl.learning.retrain import deployment, promotion
from mnist_hitl.learning.retrain.labels import judging_fold
from mnist_hitl.learning.retrain.promotion import Comparison, Scores, promotion_rule, with_log_loss
from mnist_hitl.model import DEPLOYED_POINTER
from mnist_hitl.store import Store


def comparison(
    challenger_mnist: float,
    champion_mnist: float,
    challenger_users: float | None,
    champion_users: float | None,
    only_champion: int = 0,
    only_challenger: int = 0,
) -> Comparison:
    nan = float("nan")
    return Comparison(
        Scores(challenger_mnist, nan if challenger_users is None else challenger_users),
        Scores(champion_mnist, nan if champion_users is None else champion_users),
        1000,
        0 if challenger_users is None else 75,
        only_champion,
        only_challenger,
    )


def test_better_on_users_and_close_on_mnist_is_promoted():
    verdict = promotion_rule(comparison(0.985, 0.989, 0.93, 0.76, only_champion=9, only_challenger=5))
    assert verdict.promote
    assert any("ok" in reason for reason in verdict.reasons)
    assert any("better" in reason for reason in verdict.reasons)


def test_exactly_half_a_point_lower_is_still_promoted():
    assert promotion_rule(comparison(0.984, 0.989, 0.9, 0.8, only_champion=25, only_challenger=20)).promote


@pytest.mark.parametrize("users", [0.76, 0.70])
def test_not_better_on_users_is_rejected(users):
    verdict = promotion_rule(comparison(0.995, 0.989, users, 0.76))
    assert not verdict.promote
    assert any("not better" in reason for reason in verdict.reasons)


def test_a_significant_mnist_drop_is_rejected_even_with_a_users_gain():
    # 1 point lower, 14 digits lost against 4 gained: McNemar p = 0.015
    verdict = promotion_rule(comparison(0.979, 0.989, 0.91, 0.76, only_champion=14, only_challenger=4))
    assert not verdict.promote
    assert any("more than 0.50 points lower (McNemar" in reason for reason in verdict.reasons)


def test_a_drop_within_the_holdouts_noise_is_tolerated_unless_switched_off():
    noisy = comparison(0.982, 0.989, 0.93, 0.76, only_champion=12, only_challenger=5)  # p = 0.07
    assert promotion_rule(noisy).promote
    assert any("within the holdout's noise" in reason for reason in promotion_rule(noisy).reasons)
    assert not promotion_rule(noisy, significance=0).promote  # the plain 0.5-point rule
    assert not promotion_rule(noisy, max_holdout_drop=0.005, significance=0.1).promote


def test_poisoned_challenger_is_rejected():
    # learnt the users' wrong labels: "better" on their (wrong) slice, much worse on MNIST
    assert not promotion_rule(comparison(0.90, 0.989, 0.6, 0.0, only_champion=95, only_challenger=6)).promote


def blended(fine_tune_mnist: float) -> Comparison:
    """A challenger that keeps 30% of the champion's weights, 0.1 points down on MNIST once blended."""
    judged = comparison(0.988, 0.989, 0.92, 0.76, only_champion=6, only_challenger=5)
    judged.champion_share, judged.fine_tune_mnist_holdout = 0.3, fine_tune_mnist
    return judged


def test_a_blend_does_not_hide_labels_that_taught_the_fine_tune_wrong_digits():
    poisoned = promotion_rule(blended(0.970))  # the fine-tune lost 1.9 points; the blend brought them back
    assert not poisoned.promote
    (reason,) = [reason for reason in poisoned.reasons if "fine-tune" in reason]
    assert "30% of the champion's weights" in reason and "-1.90 points" in reason and "more than 1.50" in reason
    honest = promotion_rule(blended(0.980))  # 0.9 points down before the blend: what honest labels cost
    assert honest.promote
    assert any("fine-tune" in reason and reason.endswith("ok") for reason in honest.reasons)
    assert not promotion_rule(blended(0.980), max_fine_tune_drop=0.005).promote
    assert not any("fine-tune" in reason for reason in promotion_rule(comparison(0.988, 0.989, 0.92, 0.76)).reasons)


def test_without_users_heldout_the_challenger_must_be_better_on_mnist():
    assert promotion_rule(comparison(0.990, 0.989, None, None, only_champion=1, only_challenger=2)).promote
    verdict = promotion_rule(comparison(0.989, 0.989, None, None))
    assert not verdict.promote
    assert any("no users' held-out drawings" in reason for reason in verdict.reasons)


def test_mcnemar_p_value():
    assert promotion.holdout_drop_p_value(0, 0) == 1.0
    assert promotion.holdout_drop_p_value(10, 10) > 0.5
    assert promotion.holdout_drop_p_value(14, 4) == pytest.approx(0.0154, abs=1e-3)
    assert promotion.holdout_drop_p_value(0, 10) == 1.0


def test_judging_folds_are_stable_and_about_even():
    ids = range(1, 4001)
    folds = [judging_fold(i, 2) for i in ids]
    assert folds == [judging_fold(i, 2) for i in ids]
    assert 0.45 < folds.count(0) / 4000 < 0.55
    assert {judging_fold(i, 4) for i in ids} == {0, 1, 2, 3}


def test_the_users_verdict_states_its_uncertainty():
    close = comparison(0.989, 0.989, 0.80, 0.76, only_champion=0, only_challenger=0)
    close.users_only_challenger_right, close.users_only_champion_right = 5, 2
    (users_reason,) = [reason for reason in promotion_rule(close).reasons if "judged drawings" in reason]
    assert "5 read right only by the challenger, 2 only by the champion" in users_reason
    p_value = float(users_reason.split("McNemar p=")[1].split(";")[0])
    assert p_value == pytest.approx(promotion.holdout_drop_p_value(5, 2), abs=0.005) and p_value > 0.2


def test_reconcile_trusts_the_deployed_pointer(home):
    models = home.models_dir
    models.mkdir(parents=True)
    (models / DEPLOYED_POINTER).write_text(
        json.dumps({"version": "v2", "keras": "model_v2.keras", "tflite": "model_v2.tflite"})
    )
    (models / ".model_v3.partial.keras").write_bytes(b"half")
    with Store(home.db_path) as store:
        store.record_model_version("v1", "model_v1.keras", 0.98, "deployed")
        store.record_model_version("v2", "model_v2.keras", 0.985, "candidate", {"cycle_id": "c1"})  # died after deploy
        store.record_model_version("v3", "model_v3.keras", 0.97, "candidate", {"cycle_id": "c2"})  # died before
        changes = deployment.reconcile(home, store)
        assert len(changes) == 3
        assert not (models / ".model_v3.partial.keras").exists()
        status = {row["version"]: row["status"] for row in store.model_versions()}
        details = {row["version"]: row["details"] for row in store.model_versions()}
        assert status == {"v1": "deployed", "v2": "deployed", "v3": "rejected"}
        assert details["v2"]["cycle_id"] == "c1" and "reconciled" in details["v3"]
        assert deployment.reconcile(home, store) == []  # settled: nothing more to do


def with_probabilities(new_true: list[float], old_true: list[float]) -> Comparison:
    """A tie on 4 judged drawings (both read 3 right), with the probability each model gives the true digit."""
    verdict_input = comparison(0.99, 0.99, 0.75, 0.75)
    labels = np.zeros(len(new_true), dtype=int)
    new, old = np.full((len(labels), 10), 0.0), np.full((len(labels), 10), 0.0)
    new[:, 0], old[:, 0] = new_true, old_true
    new[:, 1], old[:, 1] = 1 - np.asarray(new_true), 1 - np.asarray(old_true)
    return with_log_loss(verdict_input, new, old, labels)


def test_an_accuracy_tie_goes_to_the_model_surer_of_the_true_digit():
    surer = promotion_rule(with_probabilities([0.9, 0.8, 0.7, 0.4], [0.6, 0.55, 0.6, 0.3]))
    assert surer.promote, surer.reasons
    assert len(surer.reasons) == 2  # the MNIST holdout's reason, then the users' (with the log-loss)
    assert "surer of the true digit" in surer.reasons[1] and "log-loss" in surer.reasons[1]
    less_sure = promotion_rule(with_probabilities([0.6, 0.55, 0.6, 0.3], [0.9, 0.8, 0.7, 0.4]))
    assert not less_sure.promote and "not better" in less_sure.reasons[1]


def judged_25(only_champion: int, only_challenger: int, surer: bool) -> Comparison:
    """25 judged drawings (MNIST equal): both read 15 right, then ``only_champion`` read right by the champion alone
    and ``only_challenger`` by the challenger alone; with ``surer`` the challenger gives the true digit more
    probability wherever it reads right, else less."""
    labels = np.zeros(25, dtype=int)
    both = 15
    old_right = np.arange(25) < both + only_champion
    new_right = (np.arange(25) < both) | (
        (np.arange(25) >= both + only_champion) & (np.arange(25) < both + only_champion + only_challenger)
    )
    digits = {name: np.where(right, 0, 1) for name, right in (("challenger", new_right), ("champion", old_right))}
    mnist = {"challenger": np.zeros(100, dtype=int), "champion": np.zeros(100, dtype=int)}
    verdict_input = promotion.judge(mnist, digits, np.zeros(100, dtype=int), labels)
    new_true = np.where(new_right, 0.95 if surer else 0.55, 0.3 if surer else 0.05)
    old_true = np.where(old_right, 0.7, 0.1)
    new, old = np.zeros((25, 10)), np.zeros((25, 10))
    new[:, 0], old[:, 0], new[:, 1], old[:, 1] = new_true, old_true, 1 - new_true, 1 - old_true
    return with_log_loss(verdict_input, new, old, labels)


def test_one_drawing_fewer_read_right_is_noise_and_the_proper_scoring_rule_decides():
    # 3 drawings only the champion reads, 2 only the challenger: 4 points lower, McNemar p = 0.5
    surer = promotion_rule(judged_25(3, 2, surer=True))
    assert surer.promote, surer.reasons
    assert (
        "fewer read right but not significantly (one-sided McNemar p=0.50 that it reads worse, >= 0.05), and surer"
        in surer.reasons[1]
    )
    assert not promotion_rule(judged_25(3, 2, surer=False)).promote


def test_significantly_fewer_read_right_is_rejected_however_sure_the_challenger_is():
    # 7 drawings only the champion reads, none only the challenger: McNemar p = 0.008
    verdict = promotion_rule(judged_25(7, 0, surer=True))
    assert not verdict.promote and "not better" in verdict.reasons[1], verdict.reasons
    assert verdict.reasons[1].count("log-loss") == 1  # the scoring rule is reported, and overruled


def test_a_lower_log_loss_carried_by_one_drawing_does_not_break_a_tie():
    # the challenger is far surer on one drawing and a little less sure on the three others
    one_drawing = promotion_rule(with_probabilities([0.99, 0.6, 0.6, 0.6], [0.05, 0.62, 0.62, 0.62]))
    assert not one_drawing.promote, one_drawing.reasons


def test_a_tie_without_the_challengers_probabilities_is_still_rejected():
    assert not promotion_rule(comparison(0.99, 0.99, 0.75, 0.75)).promote
