"""A team on one store: labels name their reviewer from the command line, the suspect queue, the agreement figures."""

from __future__ import annotations

import getpass
import json

import numpy as np
import pytest

from mnist_hitl.model import deployed_model
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import Store
from mnist_hitl.workbench import Workbench
from mnist_hitl.workbench.suspects import Suspect, record_judged_suspects, record_suspects, stored_suspects
from tests.support.helpers import run_cli

PNG_SIDE = 28


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def picture(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).random((PNG_SIDE, PNG_SIDE)).astype(np.float32))


def sure_of(digit: int, p: float) -> list[float]:
    return [p if d == digit else (1 - p) / 9 for d in range(10)]


@pytest.fixture
def predictions(home) -> list[int]:
    with Store(home.db_path) as store:
        return [store.record_prediction(picture(i), i % 10, sure_of(i % 10, 0.9), "v1", 1.0) for i in range(4)]


def test_labels_from_the_command_line_name_their_reviewer_and_history_shows_it(home, predictions):
    first, second = predictions[:2]
    answer = lines(run_cli(home, "correct", str(first), "7", "--reviewer", "ada").stdout)
    assert answer == [{"label_id": 1, "prediction_id": first, "label": 7, "kind": "correct", "reviewer": "ada"}]
    assert lines(run_cli(home, "confirm", str(first)).stdout)[0]["reviewer"] == getpass.getuser()
    run_cli(home, "undo", str(first), "--reviewer", "bob")
    run_cli(home, "correct", str(second), "3")
    history = lines(run_cli(home, "history", str(first)).stdout)
    assert [(entry["kind"], entry["label"], entry["reviewer"]) for entry in history] == [
        ("correct", 7, "ada"),
        ("confirm", 0, getpass.getuser()),  # what the model read in the first picture
        ("undo", None, "bob"),
    ]


@pytest.mark.parametrize("reviewer", ["", " ", "x" * 101])
def test_a_bad_reviewer_gets_one_line_and_nothing_is_written(home, predictions, reviewer):
    first = str(predictions[0])
    for args in (("correct", first, "7"), ("confirm", first), ("undo", first)):
        done = run_cli(home, *args, "--reviewer", reviewer, check=False)
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
        assert "reviewer" in done.stderr and "Traceback" not in done.stderr
    with Store(home.db_path) as store:
        assert store.labels() == []


def test_agreement_prints_kappa_per_pair_alpha_and_digits(home, predictions):
    with Store(home.db_path) as store:
        for pid, (ada, bob) in zip(predictions, [(0, 0), (1, 1), (2, 7), (3, 3)], strict=True):
            store.add_label(pid, ada, "correct", reviewer="ada")
            store.add_label(pid, bob, "correct", reviewer="bob")
        store.add_label(predictions[0], 0, "confirm")  # an older client's label: unknown
    figures = json.loads(run_cli(home, "agreement").stdout)
    assert figures["reviewers"] == {"ada": 4, "bob": 4} and figures["unattributed_labels"] == 1
    (pair,) = figures["kappa"]
    assert pair["reviewers"] == ["ada", "bob"] and pair["drawings"] == 4 and pair["agreement"] == 0.75
    assert 0 < pair["kappa"] < 1 and 0 < figures["alpha"] < 1
    assert figures["digits"]["2"] == {"drawings": 1, "specific_agreement": 0.0}


def test_the_stored_suspect_list_is_served_with_its_reasons_until_someone_looks_again(home, predictions):
    with Store(home.db_path) as store:
        label_ids = [store.add_label(pid, 4, "correct", reviewer="ada") for pid in predictions[:2]]
        suspects = [
            Suspect(pid, label_id, 4, "ada", 9, 0.97, 0.01, sure_of(9, 0.97))
            for pid, label_id in zip(predictions[:2], label_ids, strict=True)
        ]
        record_suspects(store, suspects, "cycle-1", "out-of-fold probabilities of the cycle's judging folds")
        store.add_label(predictions[1], 4, "confirm", reviewer="bob")  # bob looked again
    (item,) = lines(run_cli(home, "queue", "--strategy", "suspect").stdout)
    assert item["prediction_id"] == predictions[0] and item["predicted_label"] == 9
    assert "labelled 4 by ada" in item["reason"] and "believes 9 at 0.970" in item["reason"]
    assert "out-of-fold" in item["reason"] and item["model_version"] == "cycle-1"


def test_a_cycle_stores_the_labels_it_judged_as_suspect_and_keeps_the_earlier_ones_it_did_not_judge(home):
    with Store(home.db_path) as store:
        drawings = [store.record_prediction(picture(i), i % 10, sure_of(i % 10, 0.9), "v1", 1.0) for i in range(41)]
        earlier, judged = drawings[0], drawings[1:]
        earlier_label = store.add_label(earlier, 4, "correct", reviewer="ada")
        record_suspects(store, [Suspect(earlier, earlier_label, 4, "ada", 9, 0.9, 0.05, sure_of(9, 0.9))], "c1", "c1")
        label_ids = [store.add_label(pid, i % 10, "confirm", reviewer="bob") for i, pid in enumerate(judged)]
        # The model, never trained on them, reads every drawing as labelled but the first: a 3 labelled 0.
        probabilities = np.array([sure_of(3 if i == 0 else i % 10, 0.95) for i in range(len(judged))])
        relabelled = judged[5]
        store.add_label(relabelled, 7, "correct", reviewer="eve")  # eve looked again since: not judged
        probabilities[5] = sure_of(3, 0.95)
        found = record_judged_suspects(store, label_ids, probabilities, "c2", "cycle c2's judging")
        assert [(s.prediction_id, s.label, s.reviewer, s.model_label) for s in found] == [(judged[0], 0, "bob", 3)]
        listed, version, origin = stored_suspects(store)
        assert [s.prediction_id for s in listed] == [judged[0], earlier]  # the new ones first
        assert version == "c2" and origin.startswith("cycle c2's judging")


def test_without_a_stored_list_the_deployed_models_scores_find_the_wrong_labels(home_with_model):
    """Predictions made by the deployed model (their own probabilities are its scores): 3 labels contradict it."""
    version = deployed_model(home_with_model.models_dir).version
    rng = np.random.default_rng(0)
    with Store(home_with_model.db_path) as store:
        wrong = {}
        for i in range(60):
            digit, mislabelled = i % 10, i in (7, 23, 41)
            p = 0.99 if mislabelled else float(rng.uniform(0.85, 0.99))  # the model is sure of what it saw
            pid = store.record_prediction(picture(i), digit, sure_of(digit, p), version, 1.0)
            given = (digit + 5) % 10 if mislabelled else digit
            if given != digit:
                wrong[pid] = given
            store.add_label(pid, given, "correct", reviewer="ada")
    with Workbench(home_with_model) as bench:
        items = bench.queue(limit=10, strategy="suspect")
    assert {item.prediction_id for item in items} == set(wrong)
    assert all("deployed model" in item.reason and "computed now" in item.reason for item in items)
    assert all(f"labelled {wrong[item.prediction_id]} by ada" in item.reason for item in items)


def test_two_reviewers_are_never_given_the_same_drawing_and_a_skip_gives_it_back(home, predictions):
    with Store(home.db_path) as store:
        more = [store.record_prediction(picture(10 + i), 4, sure_of(4, 0.9), "v1", 1.0) for i in range(2)]
        suspects = [
            Suspect(pid, store.add_label(pid, 4, "correct", reviewer="eve"), 4, "eve", 9, 0.9, 0.05, sure_of(9, 0.9))
            for pid in [*predictions, *more]
        ]
        record_suspects(store, suspects, "cycle-1", "out-of-fold")
    order = [suspect.prediction_id for suspect in suspects]

    def served(reviewer: str, limit: int) -> list[int]:
        done = run_cli(home, "queue", "--strategy", "suspect", "--limit", str(limit), "--reviewer", reviewer)
        return [item["prediction_id"] for item in lines(done.stdout)]

    assert served("ada", 2) == order[:2]
    assert served("bob", 2) == order[2:4]
    assert served("ada", 2) == order[:2]  # ada's own, renewed
    with Workbench(home) as bench:
        assert bench.release(order[0], "ada") is True
    assert served("bob", 10) == [order[0], *order[2:]]
    assert served("ada", 10) == [order[1]]


@pytest.fixture
def doubted(home_with_model) -> int:
    """Twenty drawings the deployed model reads surely, each labelled as read by ada but one, a 7 she labelled 3:
    that one's id."""
    version = deployed_model(home_with_model.models_dir).version
    with Store(home_with_model.db_path) as store:
        ids = [store.record_prediction(picture(i), i % 10, sure_of(i % 10, 0.99), version, 1.0) for i in range(20)]
        for pid in ids:
            store.add_label(pid, 3 if pid == ids[7] else (pid - ids[0]) % 10, "correct", reviewer="ada")
    return ids[7]


def test_a_doubted_label_is_offered_blind_to_another_reviewer_until_one_has_answered(home_with_model, doubted):
    with Workbench(home_with_model.replace(second_opinion_share=0)) as bench:
        (item,) = bench.queue(strategy="second-opinion", reviewer="bob")
        assert item.prediction_id == doubted and "doubts" in item.reason and "3" not in item.reason
        assert bench.queue(strategy="second-opinion", reviewer="ada") == []  # she gave the first answer
        bench.label(doubted, 7, "correct", reviewer="bob")
        assert bench.queue(strategy="second-opinion", reviewer="eve") == []  # two opinions now
        with pytest.raises(ValueError, match="reviewer"):
            bench.queue(strategy="second-opinion")


def test_a_label_ends_its_writers_lease_so_the_dispute_it_opens_reaches_an_adjudicator_at_once(
    home_with_model, doubted
):
    with Workbench(home_with_model.replace(second_opinion_share=0)) as bench:
        (item,) = bench.queue(strategy="second-opinion", reviewer="bob")  # leased to bob
        assert item.prediction_id == doubted
        bench.label(doubted, 7, "correct", reviewer="bob")  # ada said 3: a dispute
        assert [item.prediction_id for item in bench.queue(strategy="adjudicate", reviewer="cy")] == [doubted]
        assert bench.release(doubted, "bob") is False  # the label ended bob's lease


def test_an_adjudication_from_the_command_line_ends_the_dispute(home, predictions):
    from mnist_hitl.workbench.adjudication import disputes

    first = predictions[0]
    run_cli(home, "correct", str(first), "4", "--reviewer", "ada")
    run_cli(home, "correct", str(first), "9", "--reviewer", "bob")
    with Store(home.db_path) as store:
        assert list(disputes(store.labels())) == [first]
    answer = lines(run_cli(home, "adjudicate", str(first), "4", "--reviewer", "cy").stdout)
    assert answer[0]["kind"] == "adjudicate" and answer[0]["label"] == 4 and answer[0]["reviewer"] == "cy"
    with Store(home.db_path) as store:
        assert disputes(store.labels()) == {}
    refused = run_cli(home, "adjudicate", str(first), "10", check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
