"""``GET /reviewers`` and ``GET /agreement``: the team's labels over HTTP, as the command line shows them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
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
