"""A lease over HTTP: ``DELETE /queue/{id}/lease`` gives a drawing back (a skip) so the next reviewer is given it;
only the holder's lease is theirs to release. The command line's ``release`` too."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.api.tokens import token_hash
from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import Store
from tests.support.helpers import run_cli

ADA, BOB = "ada-token-0123456789", "bob-token-9876543210"
AS_ADA, AS_BOB = {"X-Reviewer": "ada"}, {"X-Reviewer": "bob"}


@pytest.fixture
def ranked(home_with_model: Settings) -> Settings:
    """Five unlabelled drawings and a queue without its random share: the same order for everyone."""
    with Store(home_with_model.db_path) as store:
        for x in load_bundled().x_test[:5]:
            store.record_prediction(encode_png(x), 0, [0.1] * 10, "v0", 1.0, "import")
    return home_with_model.replace(queue_random_share=0.0)


@pytest.fixture
def client(ranked: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(ranked)) as test_client:
        yield test_client


def first(client: TestClient, headers: dict[str, str]) -> int:
    answer = client.get("/queue", params={"limit": 1}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()[0]["prediction_id"]


def test_a_released_drawing_is_the_next_reviewers_next_drawing(client: TestClient) -> None:
    mine = first(client, AS_ADA)
    other = first(client, AS_BOB)
    assert other != mine and first(client, AS_BOB) == other  # asking again renews bob's own
    assert client.delete(f"/queue/{mine}/lease", headers=AS_ADA).status_code == 204
    assert client.get("/queue", params={"limit": 1}, headers={"X-Reviewer": "cy"}).json()[0]["prediction_id"] == mine


def test_a_label_ends_its_writers_lease_so_the_dispute_it_opens_is_served_to_an_adjudicator_at_once(
    client: TestClient,
) -> None:
    mine = first(client, AS_ADA)
    assert client.post(f"/predictions/{mine}/labels", json={"label": 3}, headers=AS_BOB).status_code == 201
    assert client.post(f"/predictions/{mine}/labels", json={"label": 5}, headers=AS_ADA).status_code == 201
    served = client.get("/queue", params={"strategy": "adjudicate"}, headers={"X-Reviewer": "cy"}).json()
    assert [item["prediction_id"] for item in served] == [mine]
    assert "3 by bob" in served[0]["reason"] and "5 by ada" in served[0]["reason"]
    assert client.delete(f"/queue/{mine}/lease", headers=AS_ADA).status_code == 404  # ended by her label


def test_a_lease_that_is_not_yours_is_a_404(client: TestClient) -> None:
    mine = first(client, AS_ADA)
    refused = client.delete(f"/queue/{mine}/lease", headers=AS_BOB)
    assert refused.status_code == 404 and refused.json()["detail"] == f"prediction {mine} is not leased to 'bob'"
    assert client.delete(f"/queue/{mine}/lease").status_code == 403  # no reviewer: no lease to name
    assert client.delete(f"/queue/{mine}/lease", headers=AS_ADA).status_code == 204
    assert client.delete(f"/queue/{mine}/lease", headers=AS_ADA).status_code == 404  # released already
    assert client.delete("/queue/999999/lease", headers=AS_ADA).status_code == 404
    assert first(client, AS_BOB) == mine  # free again: bob is given it


def test_with_named_tokens_the_lease_is_the_token_holders(ranked: Settings) -> None:
    named = ranked.replace(api_tokens=f"ada:{token_hash(ADA)},bob:{token_hash(BOB)}")
    with TestClient(create_app(named)) as client:
        mine = first(client, {"Authorization": f"Bearer {ADA}"})
        assert client.delete(f"/queue/{mine}/lease", headers=AS_ADA).status_code == 401  # a name is not a token
        assert client.delete(f"/queue/{mine}/lease", headers={"Authorization": f"Bearer {BOB}"}).status_code == 404
        assert client.delete(f"/queue/{mine}/lease", headers={"Authorization": f"Bearer {ADA}"}).status_code == 204


def test_the_release_command_gives_back_the_reviewers_own_lease_only(ranked: Settings) -> None:
    with Store(ranked.db_path) as store:
        store.lease([1], "ada", 300)
    refused = run_cli(ranked, "release", "1", "--reviewer", "bob", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == "error: prediction 1 is not leased to 'bob'"
    done = run_cli(ranked, "release", "1", "--reviewer", "ada")
    assert json.loads(done.stdout) == {"prediction_id": 1, "released": "ada"}
    with Store(ranked.db_path) as store:
        assert store.lease([1], "bob", 300) == [1]
