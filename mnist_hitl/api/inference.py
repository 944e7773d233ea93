"""The Open Inference Protocol v2 (KServe's and Triton's): server and model health, metadata, inference on tensors.

The protocol's own clients (``tritonclient.http``, KServe's) speak it as it is written, not as
FastAPI would parse it: they send JSON with no ``Content-Type``, a tensor's bytes after the
JSON (the binary tensor data extension: ``Inference-Header-Content-Length`` says where the JSON
ends, an input's ``binary_data_size`` how many bytes are its own), compressed bodies, and they
read an error from ``{"error": "..."}``. So the infer route reads its body itself, and every
route here answers an error in the protocol's form (:class:`ProtocolRoute`): a bad tensor
(shape, datatype, size) is a 400, never a 5xx. Only the deployed version is served; another
version is a 404. What loads or runs the model runs on FastAPI's thread pool, as the other
routes' work does, never on the event loop.

Raw tensors are scored, not stored: they are not pictures a person drew, and they come
preprocessed already (MNIST-style 28x28, values 0-1).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from mnist_hitl.api import bodies
from mnist_hitl.api.dependencies import CurrentWorkbench
from mnist_hitl.api.schemas import MODEL_NAME, InferIn, InferOut, inline_schema, protocol_errors
from mnist_hitl.model import ModelFileError
from mnist_hitl.preprocess import PictureTooLargeError
from mnist_hitl.workbench import Workbench

PIXELS = 28 * 28
INPUT = {"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}
OUTPUT = {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": inline_schema(InferIn)}}}}
BINARY_ANSWER = {200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


def one_line(errors: list[dict]) -> str:
    """A validation error as one line: where, what, and the value refused when it is short."""
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body",))
    text = f"{where}: {first['msg']}" if where else first["msg"]
    given = first.get("input")
    if where and isinstance(given, str | int | float) and len(repr(given)) <= 40:
        text += f" (got {given!r})"
    return text + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ProtocolRoute(APIRoute):
    """A route whose every refusal is the protocol's ``{"error": "..."}``; a malformed request is a 400."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as error:
                return _error(error.status_code, str(error.detail), error.headers)
            except RequestValidationError as error:
                return _error(400, one_line(list(error.errors())))
            except PictureTooLargeError as error:
                return _error(413, str(error))
            except ModelFileError as error:
                return _error(503, str(error))

        return answer


router = APIRouter(tags=["open inference protocol"], route_class=ProtocolRoute)
MODEL = "/v2/models/{model_name}"
VERSIONED = "/v2/models/{model_name}/versions/{model_version}"


ModelName = Annotated[str, Path(description=f"the model's name: {MODEL_NAME}", examples=[MODEL_NAME])]
ModelVersion = Annotated[str, Path(description="the deployed version (GET /v2/models/mnist)")]


def _deployed(model_name: ModelName, workbench: CurrentWorkbench) -> str:
    if model_name != MODEL_NAME:
        raise HTTPException(404, f"no model {model_name!r}: this server serves {MODEL_NAME!r}")
    return workbench.model_version


def _deployed_version(model_version: ModelVersion, deployed: Annotated[str, Depends(_deployed)]) -> str:
    if model_version != deployed:
        raise HTTPException(404, f"{MODEL_NAME!r} has no version {model_version!r} here: it serves {deployed!r}")
    return deployed


Deployed = Annotated[str, Depends(_deployed)]
DeployedVersion = Annotated[str, Depends(_deployed_version)]


@router.get("/v2/health/live")
async def server_live() -> dict:
    """The server answers."""
    return {"live": True}


@router.get("/v2/health/ready", responses=protocol_errors(503))
def server_ready(workbench: CurrentWorkbench) -> dict:
    """Ready when the deployed model is loaded (503 while none can be)."""
    workbench.refresh_model()
    return {"ready": True}


@router.get("/v2")
async def server_metadata() -> dict:
    """The server's name, version and protocol extensions."""
    try:
        release = version("mnist-hitl")
    except PackageNotFoundError:
        release = "unknown"
    return {"name": "mnist-hitl", "version": release, "extensions": ["binary_tensor_data"]}


def _metadata(served: str) -> dict:
    return {"name": MODEL_NAME, "versions": [served], "platform": "tflite", "inputs": [INPUT], "outputs": [OUTPUT]}


@router.get(MODEL, responses=protocol_errors(404, 503))
async def model_metadata(served: Deployed) -> dict:
    """The model's input and output tensors, and the version deployed now."""
    return _metadata(served)


@router.get(VERSIONED, responses=protocol_errors(404, 503))
async def versioned_model_metadata(served: DeployedVersion) -> dict:
    """The model's metadata, if this version is the one deployed (404 otherwise)."""
    return _metadata(served)


@router.get(f"{MODEL}/ready", responses=protocol_errors(404, 503))
async def model_ready(served: Deployed) -> dict:
    """Ready when the deployed model is loaded."""
    return {"name": MODEL_NAME, "ready": True}


@router.get(f"{VERSIONED}/ready", responses=protocol_errors(404, 503))
async def versioned_model_ready(served: DeployedVersion) -> dict:
    """Ready when this version is the one deployed and loaded."""
    return {"name": MODEL_NAME, "ready": True}


INFER = {
    "response_model": InferOut,
    "openapi_extra": INFER_BODY,
    "responses": {**BINARY_ANSWER, **protocol_errors(400, 404, 413, 415, 503)},
}


@router.post(f"{MODEL}/infer", **INFER)
async def infer(request: Request, workbench: CurrentWorkbench, served: Deployed) -> Response:
    """Probabilities ``[N, 10]`` for MNIST-style digits (FP32 ``[N, 28, 28]``, values 0-1); nothing is stored.

    The body is JSON whatever its ``Content-Type``; a tensor's values come as its ``data`` or, with
    the binary tensor data extension, as little-endian FP32 bytes after the JSON
    (``Inference-Header-Content-Length`` and the input's ``binary_data_size``). What the schema
    cannot say is checked here, a 400 when wrong: ``data`` holds N x 784 values
    (``binary_data_size`` N x 3,136 bytes, and that many bytes follow the JSON). The probabilities
    come back in binary when the output's ``binary_data`` (or the request's ``binary_data_output``)
    is true.
    """
    return await _infer(request, workbench)


@router.post(f"{VERSIONED}/infer", **INFER)
async def versioned_infer(request: Request, workbench: CurrentWorkbench, served: DeployedVersion) -> Response:
    """As ``POST /v2/models/mnist/infer``, if this version is the one deployed (404 otherwise)."""
    return await _infer(request, workbench)


async def _infer(request: Request, workbench: CurrentWorkbench) -> Response:
    body = await bodies.whole_body(request, workbench.settings.max_picture_bytes)
    header, tail = _split(body, request.headers.get("inference-header-content-length"))
    try:
        call = InferIn.model_validate_json(header)
    except ValidationError as error:
        raise HTTPException(400, one_line(error.errors())) from None
    digits = _digits(call, tail)
    binary = _binary_output(call)
    probabilities, served = await run_in_threadpool(_score, workbench, digits)
    return _answer(call, np.asarray(probabilities, dtype=np.float32), served, binary)


def _score(workbench: Workbench, digits: np.ndarray) -> tuple[np.ndarray, str]:
    if len(digits) == 1:  # the one-picture interpreter: a batch's is padded to its full size
        probabilities, served = workbench.predictor.predict(digits[0])
        return probabilities.reshape(1, -1), served
    return workbench.score_digits(digits)


def _split(body: bytes, declared: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the bytes after it (binary tensor data extension)."""
    if declared is None:
        return body, b""
    if not declared.strip().isdigit() or int(declared) > len(body):
        raise HTTPException(
            400, f"Inference-Header-Content-Length {declared!r} is not within the {len(body)}-byte body"
        )
    return body[: int(declared)], body[int(declared) :]


def _digits(call: InferIn, tail: bytes) -> np.ndarray:
    """The input tensor as ``(N, 28, 28)`` float32, clipped to 0-1; every size checked against its shape."""
    tensor = call.inputs[0]
    rows = tensor.shape[0]
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        needed = rows * PIXELS * 4
        if type(size) is not int or size != needed:
            raise HTTPException(400, f"binary_data_size is {size!r}: shape {list(tensor.shape)} in FP32 is {needed}")
        if tensor.data is not None:
            raise HTTPException(400, "the input has both data and binary_data_size: send one")
        if len(tail) != size:
            raise HTTPException(400, f"{len(tail)} bytes follow the JSON, binary_data_size says {size}")
        values = np.frombuffer(tail, dtype="<f4")
    else:
        if tail:
            raise HTTPException(400, f"{len(tail)} bytes follow the JSON and no input has a binary_data_size")
        if tensor.data is None:
            raise HTTPException(400, "the input has no data (nor a binary_data_size)")
        if len(tensor.data) != rows * PIXELS:
            raise HTTPException(400, f"shape {list(tensor.shape)} needs {rows * PIXELS} values, got {len(tensor.data)}")
        values = np.asarray(tensor.data, dtype=np.float32)
    if not np.isfinite(values).all():
        raise HTTPException(400, "the input holds NaN or infinite values")
    return np.clip(values.reshape(rows, 28, 28), 0.0, 1.0)


def _binary_output(call: InferIn) -> bool:
    """Whether the probabilities go back as bytes after the JSON: the output's choice, else the request's."""
    binary = call.parameters.get("binary_data_output") is True
    if not call.outputs:
        return binary
    asked = call.outputs[0].parameters
    if asked.get("classification"):
        raise HTTPException(400, "the classification extension is not served: ask for the probabilities")
    return asked.get("binary_data", binary) is True


def _answer(call: InferIn, probabilities: np.ndarray, served: str, binary: bool) -> Response:
    tensor: dict = {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape)}
    answer = {"model_name": MODEL_NAME, "model_version": served, "outputs": [tensor]}
    if call.id is not None:
        answer["id"] = call.id
    if not binary:
        tensor["data"] = probabilities.reshape(-1).tolist()
        return JSONResponse(answer)
    raw = probabilities.astype("<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps(answer).encode()
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
