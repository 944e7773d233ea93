"""The HTTP API: in process (TestClient, schemathesis over its own schema) and as a running ``mnist-hitl api``."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from PIL import Image

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from tests.support.helpers import REPO, free_port, start_cli


def digit_png(index: int = 0) -> bytes:
    """A bundled MNIST holdout digit as a PNG (white on black, as MNIST draws)."""
    return encode_png(load_bundled().x_test[index])


@pytest.fixture
def client(home_with_model: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home_with_model)) as test_client:
        yield test_client


def rows(settings: Settings, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(settings.db_path) as connection:
        return connection.execute(sql, args).fetchall()


def test_predict_label_and_read_back(client: TestClient, home_with_model: Settings) -> None:
    answer = client.post("/predict", files={"file": ("seven.png", digit_png(0), "image/png")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"prediction_id", "predicted_label", "probabilities", "model_version", "latency_ms"}
    assert len(body["probabilities"]) == 10 and body["predicted_label"] == load_bundled().y_test[0]
    raw = client.post("/predict", content=digit_png(1), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["prediction_id"] == body["prediction_id"] + 1

    pid = body["prediction_id"]
    assert client.post(f"/predictions/{pid}/labels", json={"label": 3, "kind": "correct"}).status_code == 201
    assert client.post("/correct", json={"prediction_id": pid, "label": 5}).status_code == 201
    assert client.post(f"/predictions/{pid}/labels", json={"label": 5, "kind": "confirm"}).status_code == 201

    detail = client.get(f"/predictions/{pid}").json()
    assert detail["source"] == "api" and detail["model_version"] == body["model_version"]
    assert [(entry["label"], entry["kind"]) for entry in detail["labels"]] == [
        (3, "correct"),
        (5, "correct"),
        (5, "confirm"),
    ]
    picture = client.get(f"/predictions/{pid}/image")
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size == (28, 28)
    assert rows(home_with_model, "SELECT source, predicted_label FROM predictions WHERE id = ?", pid) == [
        ("api", body["predicted_label"])
    ]
    queue = client.get("/queue", params={"limit": 5})
    assert queue.status_code == 200 and {item["prediction_id"] for item in queue.json()} == {pid + 1}


def test_reload_answers_the_old_and_the_new_version(
    client: TestClient, home_with_model: Settings, redeploy: Callable[[Path, str], str]
) -> None:
    first = client.post("/predict", content=digit_png(), headers={"content-type": "image/png"}).json()
    new = redeploy(home_with_model.models_dir, "20991231-000000-000")
    answer = client.post("/reload").json()
    assert answer == {"old_version": first["model_version"], "new_version": new, "reloaded": True}
    again = client.post("/predict", content=digit_png(), headers={"content-type": "image/png"}).json()
    assert again["model_version"] == new


def test_without_a_model_the_api_is_live_but_not_ready(home: Settings) -> None:
    with TestClient(create_app(home)) as client:
        assert client.get("/health/live").status_code == 200
        for method, path, *request in (
            ("GET", "/health/ready"),
            ("POST", "/reload"),
            ("GET", "/queue"),
            ("POST", "/import", {"files": {"files": ("a.png", digit_png(), "image/png")}}),
        ):
            answer = client.request(method, path, **request[0] if request else {})
            assert answer.status_code == 503 and "no model" in answer.json()["detail"], (path, answer.text)
        answer = client.post("/predict", content=digit_png(), headers={"content-type": "image/png"})
        assert answer.status_code == 503
    assert rows(home, "SELECT COUNT(*) FROM predictions") == [(0,)]


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_import_stores_a_batch_unlabelled_once_and_the_queue_offers_it(
    client: TestClient, home_with_model: Settings
) -> None:
    batch = [
        ("files", ("one.png", digit_png(1), "image/png")),
        ("files", ("two.png", digit_png(2), "image/png")),
        ("files", ("again.png", digit_png(1), "image/png")),  # the same picture as one.png
        ("files", ("notes.png", b"not a picture", "image/png")),
        ("files", ("more.zip", zipped({"a/three.png": digit_png(3), "__MACOSX/._x.png": b"junk"}), "application/zip")),
    ]
    answer = client.post("/import", files=batch)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["imported"], body["duplicates"], body["refused"]) == (3, 1, 1)
    names = [picture["name"] for picture in body["pictures"]]
    assert names == ["one.png", "two.png", "again.png", "notes.png", "more.zip/a/three.png"]
    first = body["pictures"][0]
    assert body["pictures"][2]["duplicate_of"] == first["prediction_id"]
    assert body["pictures"][3]["error"].startswith("not a readable image")
    stored = rows(home_with_model, "SELECT id, source, predicted_label FROM predictions ORDER BY id")
    expected_labels = [int(load_bundled().y_test[index]) for index in (1, 2, 3)]
    assert [(source, label) for _, source, label in stored] == [("import", label) for label in expected_labels]
    assert rows(home_with_model, "SELECT COUNT(*) FROM labels") == [(0,)]
    queued = {item["prediction_id"] for item in client.get("/queue", params={"limit": 10}).json()}
    assert queued == {row[0] for row in stored}

    raw = client.post(
        "/import", content=zipped({"four.png": digit_png(4)}), headers={"content-type": "application/zip"}
    )
    assert raw.status_code == 200 and raw.json()["imported"] == 1
    assert raw.json()["pictures"][0]["name"] == "upload.zip/four.png"


def test_bad_input_is_a_4xx_with_a_detail_and_stores_nothing(client: TestClient, home_with_model: Settings) -> None:
    limit = home_with_model.max_picture_bytes
    pid = client.post("/predict", content=digit_png(), headers={"content-type": "image/png"}).json()["prediction_id"]
    blank = encode_png(np.zeros((28, 28), dtype=np.float32))
    cases = [
        (413, "POST", "/predict", {"content": b"\x89PNG" + b"0" * limit, "headers": {"content-type": "image/png"}}),
        (415, "POST", "/predict", {"content": b"not a picture", "headers": {"content-type": "image/png"}}),
        (415, "POST", "/predict", {"files": {"file": ("a.txt", b"hello", "text/plain")}}),
        (415, "POST", "/predict", {"json": {"picture": 1}}),
        (422, "POST", "/predict", {"content": blank, "headers": {"content-type": "image/png"}}),
        (422, "POST", "/predict", {"content": b"", "headers": {"content-type": "image/png"}}),
        (422, "POST", "/predict", {"files": {"other": ("a.png", digit_png(), "image/png")}}),
        (422, "POST", "/import", {"files": {"file": ("a.png", digit_png(), "image/png")}}),
        (415, "POST", "/import", {"content": digit_png(), "headers": {"content-type": "image/png"}}),
        (413, "POST", "/import", {"content": b"PK" + b"0" * limit, "headers": {"content-type": "application/zip"}}),
        (422, "POST", f"/predictions/{pid}/labels", {"json": {"label": 10}}),
        (422, "POST", f"/predictions/{pid}/labels", {"json": {"label": 3, "kind": "undo"}}),
        (422, "POST", f"/predictions/{pid}/labels", {"content": b"{", "headers": {"content-type": "application/json"}}),
        (422, "POST", "/correct", {"json": {"prediction_id": pid, "label": -1}}),
        (422, "GET", "/predictions/0", {}),
        (404, "GET", f"/predictions/{pid + 1}", {}),
        (404, "GET", f"/predictions/{pid + 1}/image", {}),
        (404, "POST", f"/predictions/{pid + 1}/labels", {"json": {"label": 1}}),
        (404, "POST", "/correct", {"json": {"prediction_id": pid + 1, "label": 1}}),
    ]  # the Open Inference Protocol's refusals: test_inference_protocol.py
    for status, method, path, request in cases:
        answer = client.request(method, path, **request)
        assert answer.status_code == status and answer.json()["detail"], (status, path, answer.text)
    assert rows(home_with_model, "SELECT COUNT(*) FROM predictions") == [(1,)]
    assert rows(home_with_model, "SELECT COUNT(*) FROM labels") == [(0,)]


def test_a_token_guards_the_writing_routes(home_with_model: Settings) -> None:
    with TestClient(create_app(home_with_model.replace(api_token="s3cret"))) as client:
        picture = {"content": digit_png(), "headers": {"content-type": "image/png"}}
        assert client.post("/predict", **picture).status_code == 401
        wrong = {"content": digit_png(), "headers": {"content-type": "image/png", "authorization": "Bearer nope"}}
        assert client.post("/predict", **wrong).status_code == 401
        assert client.post("/reload").status_code == 401
        good = {"authorization": "Bearer s3cret"}
        pid = client.post("/predict", content=digit_png(), headers={**good, "content-type": "image/png"}).json()[
            "prediction_id"
        ]
        assert client.post("/correct", json={"prediction_id": pid, "label": 1}).status_code == 401
        assert client.post("/correct", json={"prediction_id": pid, "label": 1}, headers=good).status_code == 201
        assert client.get(f"/predictions/{pid}").status_code == 200  # reading needs no token


def test_open_inference_protocol_v2(client: TestClient, home_with_model: Settings) -> None:
    data = load_bundled()
    digits = data.x_test[:3].astype(np.float32)
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2/models/mnist").json()
    assert metadata["inputs"][0]["shape"] == [-1, 28, 28]
    request = {
        "id": "r1",
        "inputs": [{"name": "input", "shape": [3, 28, 28], "datatype": "FP32", "data": digits.reshape(-1).tolist()}],
    }
    answer = client.post("/v2/models/mnist/infer", json=request).json()
    output = answer["outputs"][0]
    assert answer["id"] == "r1" and output["shape"] == [3, 10]
    probabilities = np.array(output["data"]).reshape(3, 10)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert list(probabilities.argmax(axis=1)) == list(data.y_test[:3])
    assert rows(home_with_model, "SELECT COUNT(*) FROM predictions") == [(0,)]  # raw tensors are not stored


def test_metrics_show_the_api_requests(client: TestClient) -> None:
    client.get("/predictions/1")
    text = client.get("/metrics").text
    assert (
        'mnist_hitl_http_request_duration_seconds_count{method="GET",route="/predictions/{prediction_id}",'
        'status="404"}' in text
    )


def test_the_api_never_imports_tensorflow_or_scipy(home_with_model: Settings) -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from mnist_hitl.api import create_app\n"
        "from mnist_hitl.preprocess import encode_png, render_strokes\n"
        "digit_png = lambda: encode_png(render_strokes([[(140, 40), (140, 240)]]))\n"  # a 280x280 one
        "with TestClient(create_app()) as client:\n"
        "    answer = client.post('/predict', content=digit_png(), headers={'content-type': 'image/png'})\n"
        "    assert answer.status_code == 200, answer.text\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'scipy' in sys.modules)\n"
    )
    env = {**os.environ, "MNIST_HITL_HOME": str(home_with_model.home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False False"


def test_the_answers_made_from_library_records_document_every_field(home: Settings) -> None:
    schemas = create_app(home).openapi()["components"]["schemas"]
    answered = {
        "PredictionOut": {"prediction_id", "predicted_label", "probabilities", "model_version", "latency_ms"},
        "PredictionDetail": {
            *("prediction_id", "created_at", "predicted_label", "probabilities"),
            *("model_version", "latency_ms", "source", "labels"),
        },
        "QueueEntry": {
            *("prediction_id", "predicted_label", "probabilities", "uncertainty"),
            *("model_version", "source", "random", "reason"),
        },
        "HistoryEntry": {"id", "label", "kind", "created_at", "reviewer"},
    }
    for name, properties in answered.items():
        schema = schemas[name]
        assert set(schema["properties"]) == set(schema["required"]) == properties, name
        assert schema["description"] and all(field.get("description") for field in schema["properties"].values())
    assert list(schemas["PredictionOut"]["properties"])[0] == "prediction_id"  # the record's own fields first


def test_every_operation_keeps_to_its_schema(home_with_model: Settings) -> None:
    """Schemathesis over the app's own schema, in process: no 5xx, every answer as documented."""
    client = TestClient(create_app(home_with_model))
    client.post("/predict", content=digit_png(), headers={"content-type": "image/png"})  # an id that exists
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.response_schema_conformance,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(operation.path == "/predict" for operation in operations)
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            case.call_and_validate(checks=checks)

        check()


# the running server --------------------------------------------------------------------------


@pytest.fixture
def running_api(home_with_model: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 (closed below)
    process = start_cli(home_with_model, "api", "--port", str(port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_the_running_server_predicts_labels_and_reloads(
    running_api: str, home_with_model: Settings, redeploy: Callable[[Path, str], str]
) -> None:
    with httpx.Client(base_url=running_api, timeout=30) as http:
        first = http.post("/predict", files={"file": ("d.png", digit_png(), "image/png")}).json()
        pid = first["prediction_id"]
        assert http.post(f"/predictions/{pid}/labels", json={"label": 4}).status_code == 201
        assert [entry["label"] for entry in http.get(f"/predictions/{pid}").json()["labels"]] == [4]
        new = redeploy(home_with_model.models_dir, "20991231-000000-000")
        assert http.post("/reload").json()["new_version"] == new
        second = http.post("/predict", content=digit_png(2), headers={"content-type": "image/png"}).json()
    assert second["model_version"] == new
    assert rows(home_with_model, "SELECT id, model_version, source FROM predictions ORDER BY id") == [
        (pid, first["model_version"], "api"),
        (second["prediction_id"], new, "api"),
    ]
    assert rows(home_with_model, "SELECT prediction_id, label, kind FROM labels") == [(pid, 4, "correct")]


def test_concurrent_clients_lose_no_row(running_api: str, home_with_model: Settings) -> None:
    threads, each = 8, 100
    pictures = [digit_png(index) for index in range(threads)]
    done: dict[int, list[tuple[int, int]]] = {}
    errors: list[str] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=running_api, timeout=60) as http:
            pairs = []
            for step in range(each):
                answer = http.post("/predict", content=pictures[number], headers={"content-type": "image/png"})
                if answer.status_code != 200:
                    errors.append(answer.text)
                    continue
                pid = answer.json()["prediction_id"]
                digit = (number + step) % 10
                labelled = http.post(f"/predictions/{pid}/labels", json={"label": digit})
                if labelled.status_code != 201:
                    errors.append(labelled.text)
                pairs.append((pid, digit))
            done[number] = pairs

    workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    expected = sorted(pair for pairs in done.values() for pair in pairs)
    assert len(expected) == threads * each and len({pid for pid, _ in expected}) == threads * each
    assert sorted(rows(home_with_model, "SELECT prediction_id, label FROM labels")) == expected
    assert sorted(rows(home_with_model, "SELECT id FROM predictions WHERE source = 'api'")) == sorted(
        (pid,) for pid, _ in expected
    )
