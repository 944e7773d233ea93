"""The API is as safe as the app: only the allowed host names, no writes from another site, the token still optional."""

from __future__ import annotations

import sqlite3
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from mnist_hitl.services.exporter import exporter_server
from tests.support.helpers import free_port

# What a page of another site sends with a form it posts to 127.0.0.1, as Chromium sends it.
CROSS_SITE = {"origin": "https://evil.example", "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"}


def counts(settings: Settings) -> tuple[int, int]:
    with sqlite3.connect(settings.db_path) as connection:
        predictions = connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        return predictions, connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0]


@pytest.fixture
def picture() -> dict:
    return {"files": {"file": ("seven.png", encode_png(load_bundled().x_test[0]), "image/png")}}


@pytest.fixture
def client(home_with_model: Settings):
    with TestClient(create_app(home_with_model)) as test_client:
        yield test_client


def test_a_name_not_allowed_gets_a_400_from_the_running_api(api_url: str, home_with_model: Settings) -> None:
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
        answer = httpx.get(f"{api_url}/predictions/1", headers={"host": host})
        assert answer.status_code == 400, host
        refused = httpx.post(f"{api_url}/predict", headers={"host": host}, content=b"\x89PNG")
        assert refused.status_code == 400, host
    for host in ("127.0.0.1", "localhost:8000", "LOCALHOST"):
        assert httpx.get(f"{api_url}/health/live", headers={"host": host}).status_code == 200, host
    assert counts(home_with_model) == (0, 0)


def test_a_name_added_to_the_allowed_hosts_is_served(home_with_model: Settings) -> None:
    served = home_with_model.replace(extra_hosts="digits.lan")
    with TestClient(create_app(served), base_url="http://digits.lan:8000") as client:
        assert client.get("/health/live").status_code == 200
    with TestClient(create_app(served.replace(extra_hosts=""))) as client:  # testserver no longer allowed
        assert client.get("/health/live").status_code == 400


@pytest.mark.parametrize(
    "headers",
    [
        CROSS_SITE,
        {"origin": "https://evil.example"},
        {"origin": "null"},  # a sandboxed frame, a file on disk
        {"sec-fetch-site": "cross-site"},
        {"origin": "http://127.0.0.1.evil.example:8000"},
    ],
)
def test_a_write_from_another_site_is_refused_and_nothing_stored(client, home_with_model, picture, headers) -> None:
    answer = client.post("/predict", headers=headers, **picture)
    assert answer.status_code == 403 and "another site" in answer.json()["detail"]
    assert "\n" not in answer.json()["detail"]
    pid = client.post("/predict", **picture).json()["prediction_id"]  # stored by a client that is no browser
    for path, request in (
        ("/import", {"files": {"files": picture["files"]["file"]}}),
        (f"/predictions/{pid}/labels", {"json": {"label": 3}}),
        ("/correct", {"json": {"prediction_id": pid, "label": 3}}),
        ("/reload", {}),
    ):
        refused = client.post(path, headers=headers, **request)
        assert refused.status_code == 403, (path, refused.text)
    infer = client.post("/v2/models/mnist/infer", headers=headers, json={})
    assert infer.status_code == 403 and set(infer.json()) == {"error"}  # the inference protocol's form
    assert counts(home_with_model) == (1, 0)


def test_same_site_and_non_browser_clients_write_without_a_token(client, home_with_model, picture) -> None:
    same_site = [
        {"origin": "http://127.0.0.1:8866", "sec-fetch-site": "same-site"},
        {"origin": "http://localhost:8000", "sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},  # typed in the address bar, a bookmark
        {},  # curl, requests, a script
    ]
    for headers in same_site:
        answer = client.post("/predict", headers=headers, **picture)
        assert answer.status_code == 200, (headers, answer.text)
        label = client.post(f"/predictions/{answer.json()['prediction_id']}/labels", headers=headers, json={"label": 7})
        assert label.status_code == 201, (headers, label.text)
    assert client.get("/predictions/1", headers=CROSS_SITE).status_code == 200  # reading: the Host check guards it
    assert counts(home_with_model) == (4, 4)


def test_the_metrics_exporter_answers_only_the_allowed_hosts(home: Settings) -> None:
    server = exporter_server(home, "127.0.0.1", free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        assert httpx.get(url).status_code == 200
        assert httpx.get(url, headers={"host": "localhost:9108"}).status_code == 200
        for host in ("evil.example", "evil.example:9108", ""):
            assert httpx.get(url, headers={"host": host}).status_code == 400, host
    finally:
        server.shutdown()
        server.server_close()


def test_the_schema_declares_the_token_only_when_one_is_set(home: Settings) -> None:
    def secured(schema: dict) -> set[str]:
        return {path for path, operations in schema["paths"].items() for op in operations.values() if "security" in op}

    open_schema = create_app(home).openapi()
    assert secured(open_schema) == set() and "securitySchemes" not in open_schema.get("components", {})
    guarded = create_app(home.replace(api_token="s3cret")).openapi()
    assert {"/predict", "/import", "/reload", "/correct"} <= secured(guarded)
    assert "/predictions/{prediction_id}" not in secured(guarded)  # reading needs no token
    assert guarded["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
