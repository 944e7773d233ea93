"""Named tokens: the API knows a reviewer by the token they send, stores only its hash, and refuses a stated name
that is not the token holder's; the single ``MNIST_HITL_API_TOKEN`` keeps working as before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.api.tokens import new_token, token_hash
from mnist_hitl.config import Settings, SettingsError
from mnist_hitl.store import Store
from tests.support.helpers import run_cli

ADA, BOB = "ada-token-0123456789", "bob-token-9876543210"


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture
def drawing(home: Settings) -> int:
    with Store(home.db_path) as store:
        return store.record_prediction(b"\x89PNG stand-in", 9, [0.01] * 9 + [0.91], "v1", 1.0)


@pytest.fixture
def client(home: Settings, drawing: int) -> Iterator[TestClient]:
    named = home.replace(api_tokens=f"ada:{token_hash(ADA)}, bob:{token_hash(BOB)}", api_token="s3cret")
    with TestClient(create_app(named)) as test_client:
        yield test_client


def label(client: TestClient, drawing: int, headers: dict[str, str]):
    return client.post(f"/predictions/{drawing}/labels", json={"label": 9, "kind": "confirm"}, headers=headers)


def reviewers_of(client: TestClient, drawing: int) -> list[str]:
    return [entry["reviewer"] for entry in client.get(f"/predictions/{drawing}").json()["labels"]]


def test_a_named_token_labels_as_its_holder_and_a_stated_name_must_be_theirs(client: TestClient, drawing: int):
    assert label(client, drawing, bearer(ADA)).status_code == 201
    assert label(client, drawing, bearer(BOB, **{"X-Reviewer": "bob"})).status_code == 201
    refused = label(client, drawing, bearer(BOB, **{"X-Reviewer": "ada"}))
    assert refused.status_code == 403 and "'ada' is not the holder of this token ('bob')" in refused.json()["detail"]
    assert reviewers_of(client, drawing) == ["ada", "bob"]


def test_a_wrong_token_or_none_is_refused_and_the_single_token_still_states_any_name(client: TestClient, drawing):
    for headers in (bearer("not-a-token"), bearer(token_hash(ADA)), {}, {"X-Reviewer": "ada"}):
        answer = label(client, drawing, headers)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer", headers
    assert label(client, drawing, bearer("s3cret", **{"X-Reviewer": "zed"})).status_code == 201
    assert label(client, drawing, bearer("s3cret")).status_code == 201
    assert reviewers_of(client, drawing) == ["zed", "unknown"]


def test_with_named_tokens_the_queue_leases_only_to_a_token_holder(client: TestClient) -> None:
    refused = client.get("/queue", headers={"X-Reviewer": "ada"})
    assert refused.status_code == 401 and "known by their token" in refused.json()["detail"]
    assert client.get("/queue").status_code != 401  # reading without a reviewer stays open


def test_tokens_from_a_file_made_by_the_token_command_work_and_only_their_hash_is_stored(
    home: Settings, drawing: int, tmp_path: Path
) -> None:
    made = json.loads(run_cli(home, "token", "cy").stdout)
    assert made["reviewer"] == "cy" and made["line"] == f"cy {token_hash(made['token'])}"
    eve, eve_line = new_token("eve")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# reviewers of the team\n{made['line']}\n\n  {eve_line}  \n")
    assert made["token"] not in tokens.read_text()
    with TestClient(create_app(home.replace(api_tokens_file=tokens))) as client:
        assert label(client, drawing, bearer(made["token"])).status_code == 201
        assert label(client, drawing, bearer(eve)).status_code == 201
        assert label(client, drawing, {}).status_code == 401
        assert reviewers_of(client, drawing) == ["cy", "eve"]
        schema = client.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/predictions/{prediction_id}/labels"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/queue"]["get"]  # reading: a token is looked at, never asked for


@pytest.mark.parametrize(
    ("tokens", "file_text", "message"),
    [
        ("ada", None, "MNIST_HITL_API_TOKENS, entry 1 (expected name:sha256hex): name '' is not"),
        (f"ada:{token_hash(ADA)},bob:abc", None, "MNIST_HITL_API_TOKENS, entry 2 (expected name:sha256hex): the hash"),
        (f"ada:{token_hash(ADA)},bob:{token_hash(ADA)}", None, "the same token hash is given to 'ada' and 'bob'"),
        ("", f"ada {token_hash(ADA)}\nbob\n", "line 2 (expected 'name sha256hex'): the hash is not 64 hexadecimal"),
    ],
)
def test_a_malformed_entry_stops_the_api_at_start_with_one_line_saying_where(
    home: Settings, tmp_path: Path, tokens: str, file_text: str | None, message: str
) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "tokens"
        path.write_text(file_text)
    with pytest.raises(SettingsError, match=r"^[^\n]+$") as raised:
        create_app(home.replace(api_tokens=tokens, api_tokens_file=path))
    assert message in str(raised.value)


def test_the_api_command_refuses_a_missing_tokens_file_in_one_line(home: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    done = run_cli(home, "api", extra_env={"MNIST_HITL_API_TOKENS_FILE": str(missing)}, check=False, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: MNIST_HITL_API_TOKENS_FILE={str(missing)!r}: No such file or directory"
    ]
