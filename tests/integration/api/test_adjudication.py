"""Over HTTP an adjudicator decides a disputed drawing with a label of kind ``adjudicate``, and asks the queue
for the disputed drawings by ``strategy=adjudicate``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.store import Store
from mnist_hitl.workbench.adjudication import disputes

PROBS = [0.01] * 9 + [0.91]


@pytest.fixture
def disputed(home: Settings) -> int:
    with Store(home.db_path) as store:
        prediction_id = store.record_prediction(b"\x89PNG stand-in", 9, PROBS, "v1", 1.0)
        store.add_label(prediction_id, 3, "correct", reviewer="ada")
        store.add_label(prediction_id, 5, "correct", reviewer="bob")
    return prediction_id


@pytest.fixture
def client(home: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home)) as test_client:
        yield test_client


def test_an_adjudication_over_http_decides_the_dispute(home: Settings, disputed: int, client: TestClient) -> None:
    answer = client.post(
        f"/predictions/{disputed}/labels", json={"label": 5, "kind": "adjudicate"}, headers={"X-Reviewer": "eve"}
    )
    assert answer.status_code == 201
    history = client.get(f"/predictions/{disputed}").json()["labels"]
    assert [(entry["kind"], entry["label"], entry["reviewer"]) for entry in history][-1] == ("adjudicate", 5, "eve")
    with Store(home.db_path) as store:
        assert disputes(store.labels()) == {}
    assert client.post(f"/predictions/{disputed}/labels", json={"label": 5, "kind": "overrule"}).status_code == 422


def test_the_queue_takes_the_adjudicate_strategy(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/queue"]["get"]["parameters"]
    (strategy,) = [parameter for parameter in parameters if parameter["name"] == "strategy"]
    assert "adjudicate" in strategy["schema"]["enum"]
