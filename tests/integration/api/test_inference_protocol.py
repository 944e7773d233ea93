"""The Open Inference Protocol v2, driven by its standard client (``tritonclient.http``) against ``mnist-hitl api``."""

from __future__ import annotations

import gzip
import json
import sqlite3

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled


def digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` bundled holdout digits as the protocol takes them (FP32, 0-1), and their true labels."""
    data = load_bundled()
    return data.x_test[:count].astype(np.float32) / 255.0, np.asarray(data.y_test[:count])


def stored_predictions(settings: Settings) -> int:
    with sqlite3.connect(settings.db_path) as connection:
        return connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


@pytest.fixture
def client(api_url: str):
    with triton.InferenceServerClient(api_url.removeprefix("http://")) as standard_client:
        yield standard_client


def infer(client, batch: np.ndarray, binary_input: bool, binary_output: bool, **options):
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary_input)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary_output)]
    return client.infer("mnist", [tensor], outputs=wanted, **options)


def test_the_standard_client_sees_a_live_ready_server_and_the_deployed_model(client, home_with_model: Settings):
    deployed = json.loads((home_with_model.models_dir / "latest.json").read_text())["version"]
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", model_version=deployed)
    assert not client.is_model_ready("mnist", model_version="19990101-000000-000")
    assert not client.is_model_ready("fashion")
    server = client.get_server_metadata()
    assert server["name"] == "mnist-hitl" and "binary_tensor_data" in server["extensions"]
    for metadata in (client.get_model_metadata("mnist"), client.get_model_metadata("mnist", model_version=deployed)):
        assert metadata["versions"] == [deployed]
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}]
        assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    with pytest.raises(InferenceServerException, match="no version '19990101-000000-000'"):
        client.get_model_metadata("mnist", model_version="19990101-000000-000")


@pytest.mark.parametrize(
    ("binary_input", "binary_output"), [(False, False), (True, True), (True, False), (False, True)]
)
def test_the_standard_client_reads_digits_in_json_and_in_binary(client, home_with_model, binary_input, binary_output):
    batch, truth = digits(8)
    result = infer(client, batch, binary_input, binary_output, request_id="batch-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (8, 10) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-3)
    assert (probabilities.argmax(axis=1) == truth).all()
    assert result.get_response()["id"] == "batch-1"
    single = infer(client, batch[:1], binary_input, binary_output).as_numpy("probabilities")
    assert single.shape == (1, 10) and np.allclose(single[0], probabilities[0], atol=1e-5)
    assert stored_predictions(home_with_model) == 0  # tensors are scored, not stored


def test_compressed_requests_and_the_default_binary_answer(client, home_with_model: Settings):
    batch, truth = digits(4)
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)  # binary by default; no outputs named: every output in binary
    for compression in ("gzip", "deflate"):
        result = client.infer("mnist", [tensor], request_compression_algorithm=compression)
        assert (result.as_numpy("probabilities").argmax(axis=1) == truth).all()


@pytest.mark.parametrize(
    ("shape", "datatype", "values", "message"),
    [
        ([2, 27, 27], "FP32", np.zeros((2, 27, 27), np.float32), "shape"),
        ([1, 28, 28], "FP64", np.zeros((1, 28, 28), np.float64), "datatype"),
        ([1, 28, 28], "INT32", np.zeros((1, 28, 28), np.int32), "datatype"),
        ([2, 28, 28], "FP32", np.zeros((1, 28, 28), np.float32), "binary_data_size"),
        ([1, 784], "FP32", np.zeros((1, 784), np.float32), "shape"),
        ([1, 28, 28], "FP32", np.full((1, 28, 28), np.nan, np.float32), "NaN"),
    ],
)
def test_a_bad_tensor_is_a_400_the_client_reads(client, home_with_model, shape, datatype, values, message):
    tensor = triton.InferInput("input", list(values.shape), datatype)
    tensor.set_data_from_numpy(values)  # in binary, the client's default
    tensor.set_shape(shape)  # a shape its bytes do not fill, in two cases
    with pytest.raises(InferenceServerException, match=message) as refused:
        client.infer("mnist", [tensor])
    assert refused.value.status() == "400"
    assert stored_predictions(home_with_model) == 0


def test_json_without_a_content_type_and_errors_in_the_protocols_form(api_url: str):
    batch, truth = digits(2)
    request = {"inputs": [{"name": "input", "shape": [2, 28, 28], "datatype": "FP32", "data": batch.ravel().tolist()}]}
    body = json.dumps(request).encode()
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/json"}):
        answer = httpx.post(f"{api_url}/v2/models/mnist/infer", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert np.array(answer.json()["outputs"][0]["data"]).reshape(2, 10).argmax(axis=1).tolist() == truth.tolist()
    zipped = httpx.post(
        f"{api_url}/v2/models/mnist/infer", content=gzip.compress(body), headers={"content-encoding": "gzip"}
    )
    assert zipped.status_code == 200, zipped.text
    short = {"inputs": [{**request["inputs"][0], "data": [0.5] * 10}]}
    cases = [
        (400, "/v2/models/mnist/infer", b"{not json"),
        (400, "/v2/models/mnist/infer", json.dumps(short).encode()),
        (400, "/v2/models/mnist/infer", json.dumps({"inputs": []}).encode()),
        (404, "/v2/models/fashion/infer", body),
        (404, "/v2/models/mnist/versions/1/infer", body),
    ]
    for status, path, content in cases:
        answer = httpx.post(f"{api_url}{path}", content=content)
        assert answer.status_code == status and set(answer.json()) == {"error"}, (path, answer.text)
        assert "\n" not in answer.json()["error"]
    header = httpx.post(
        f"{api_url}/v2/models/mnist/infer", content=body, headers={"inference-header-content-length": "999999999"}
    )
    assert header.status_code == 400 and "Inference-Header-Content-Length" in header.json()["error"]


def test_without_a_model_the_server_is_live_the_model_not_ready(home: Settings):
    with TestClient(create_app(home)) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        for path in ("/v2/health/ready", "/v2/models/mnist", "/v2/models/mnist/ready"):
            answer = client.get(path)
            assert answer.status_code == 503 and "no model" in answer.json()["error"], path
        batch, _ = digits(1)
        request = {
            "inputs": [{"name": "input", "shape": [1, 28, 28], "datatype": "FP32", "data": batch.ravel().tolist()}]
        }
        answer = client.post("/v2/models/mnist/infer", json=request)
        assert answer.status_code == 503 and "no model" in answer.json()["error"]
