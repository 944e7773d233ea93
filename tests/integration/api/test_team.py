"""The team over HTTP: ``GET /reviewers`` and ``GET /agreement`` as the command line shows them, and reviewers
named by ``X-Reviewer`` working the queue at once without doing each other's work."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import Store

PROBS = [0.01] * 9 + [0.91]


@pytest.fixture
def client(home: Settings) -> Iterator[TestClient]:
    with Store(home.db_path) as store:
        ids = [store.record_prediction(b"\x89PNG stand-in", 9, PROBS, "v1", 1.0) for _ in range(3)]
        for pid, (ada, bob) in zip(ids, [(1, 1), (2, 2), (3, 8)], strict=True):
            store.add_label(pid, ada, "correct", reviewer="ada")
            store.add_label(pid, bob, "correct", reviewer="bob")
        store.undo_label(ids[2], reviewer="bob")
        store.add_label(ids[0], 1, "confirm")  # from before labels had reviewers
    with TestClient(create_app(home)) as test_client:
        yield test_client


def test_reviewers_lists_everyone_who_labelled_the_busiest_first(client: TestClient) -> None:
    answer = client.get("/reviewers")
    assert answer.status_code == 200
    people = {person["reviewer"]: person for person in answer.json()}
    assert [person["reviewer"] for person in answer.json()] == ["ada", "bob", "unknown"]
    assert (people["ada"]["labels"], people["ada"]["undos"], people["ada"]["drawings"]) == (3, 0, 3)
    assert (people["bob"]["labels"], people["bob"]["undos"], people["bob"]["drawings"]) == (3, 1, 2)
    assert people["unknown"]["drawings"] == 1


def test_agreement_gives_the_figures_of_the_command_line(client: TestClient) -> None:
    answer = client.get("/agreement")
    assert answer.status_code == 200
    figures = answer.json()
    assert figures["reviewers"] == {"ada": 3, "bob": 2} and figures["shared_drawings"] == 2
    assert figures["kappa"] == [{"reviewers": ["ada", "bob"], "drawings": 2, "agreement": 1.0, "kappa": 1.0}]
    assert figures["digits"]["1"] == {"drawings": 1, "specific_agreement": 1.0}
    assert "/agreement" in client.get("/openapi.json").json()["paths"]


def test_four_reviewers_working_the_queue_at_once_label_every_drawing_once(home_with_model: Settings, api_url: str):
    digits = load_bundled().x_test[:40]
    with Store(home_with_model.db_path) as store:
        drawings = [store.record_prediction(encode_png(x), 0, [0.1] * 10, "v0", 1.0, "import") for x in digits]
    given: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def review(name: str) -> None:
        mine = given.setdefault(name, [])
        try:
            with httpx.Client(base_url=api_url, headers={"X-Reviewer": name}, timeout=60) as client:
                start.wait()
                while items := client.get("/queue", params={"limit": 3}).raise_for_status().json():
                    for item in items:
                        answer = client.post(f"/predictions/{item['prediction_id']}/labels", json={"label": 1})
                        assert answer.status_code == 201, answer.text
                        mine.append(item["prediction_id"])
        except BaseException as error:  # shown by the main thread
            failures.append(error)

    reviewers = [threading.Thread(target=review, args=(name,)) for name in ("ada", "bob", "eve", "kim")]
    for thread in reviewers:
        thread.start()
    for thread in reviewers:
        thread.join(timeout=240)
    assert not failures, failures
    labelled = Counter(pid for ids in given.values() for pid in ids)
    assert sorted(labelled) == sorted(drawings)  # none lost
    assert set(labelled.values()) == {1}  # none labelled twice
    with Store(home_with_model.db_path) as store:
        labels = store.labels()
    assert len(labels) == len(drawings)
    assert {label.prediction_id: label.reviewer for label in labels} == {
        pid: name for name, ids in given.items() for pid in ids
    }
    assert sum(bool(ids) for ids in given.values()) >= 2  # they did work at once


def test_a_bad_reviewer_name_is_a_422_and_a_second_opinion_asked_by_no_one_a_403(client: TestClient) -> None:
    assert client.get("/queue", headers={"X-Reviewer": " "}).status_code == 422
    answer = client.get("/queue", params={"strategy": "second-opinion"})
    assert answer.status_code == 403 and "X-Reviewer" in answer.text
