"""The HTTP API: predict, label, read back and reload over HTTP (FastAPI, served by uvicorn).

One :class:`~mnist_hitl.workbench.workbench.Workbench` (``source="api"``) serves every request, so a
prediction made over HTTP is a row like any other. The routes are ``async`` and call the
workbench directly: they all run on the event loop's one thread, which is what the store's
single connection needs (its transactions must not interleave), and a prediction takes about a
millisecond, so there is nothing to gain from a thread pool. More throughput comes from more
uvicorn workers, each with its own workbench, all writing to the same SQLite store in WAL mode.

Refused input never reaches the store: every error becomes a 4xx (or a 503 while no model can
be loaded) with a JSON ``detail``. Raw tensors sent to the Open Inference Protocol route
(``/v2/models/mnist/infer``) are scored, not stored: they are not pictures a person drew.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager
from typing import Annotated, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnist_hitl import metrics
from mnist_hitl.api.schemas import (
    IMPORT_BODY,
    MAX_IMPORT_FILES,
    MAX_TENSOR_ROWS,
    MODEL_NAME,
    PICTURE_BODY,
    WRITE_ERRORS,
    CorrectIn,
    ImportedPicture,
    ImportOut,
    InferIn,
    InferOut,
    LabelIn,
    LabelOut,
    PredictionDetail,
    PredictionId,
    PredictionOut,
    QueueEntry,
    ReloadOut,
    TensorOut,
    errors,
)
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError
from mnist_hitl.preprocess import EmptyDrawingError, InvalidImageError, PictureTooLargeError
from mnist_hitl.services.exporter import exporter_registry
from mnist_hitl.store import StoreError
from mnist_hitl.workbench import Workbench


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over one workbench on ``settings``' home (default: the environment's settings)."""
    settings = settings or get_settings()
    workbench = Workbench(settings, source="api")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        workbench.close()

    app = FastAPI(
        title="mnist-hitl",
        version="1",
        lifespan=lifespan,
        description="Predict handwritten digits, label the predictions, reload the deployed model.",
    )
    app.state.workbench = workbench
    _handle_errors(app)
    _measure(app)
    guard = _token_guard(settings.api_token)
    _picture_routes(app, workbench, guard)
    _import_route(app, workbench, guard)
    _label_routes(app, workbench, guard)
    _service_routes(app, workbench, settings, guard)
    _inference_routes(app, workbench)
    return app


def app_from_environment() -> FastAPI:
    """:func:`create_app` on the environment's settings: uvicorn's factory, in each worker."""
    return create_app(get_settings())


def _problem(status: int, detail: str | list, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _handle_errors(app: FastAPI) -> None:
    statuses = ((PictureTooLargeError, 413), (InvalidImageError, 415), (EmptyDrawingError, 422), (ModelFileError, 503))
    for error_class, status in statuses:
        app.add_exception_handler(error_class, lambda _, error, status=status: _problem(status, str(error)))

    async def store_error(_: Request, error: StoreError) -> JSONResponse:
        text = str(error)
        if text.startswith("no prediction"):
            return _problem(404, text)
        return _problem(422 if text.startswith("label") else 503, text)

    app.add_exception_handler(StoreError, store_error)


def _measure(app: FastAPI) -> None:
    """Time every request into ``mnist_hitl_http_request_duration_seconds`` (a plain ASGI middleware: cheap)."""

    class Timed:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            start, status = time.perf_counter(), [500]

            async def send_and_note(message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.inner(scope, receive, send_and_note)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.record_http_request(route, scope["method"], status[0], time.perf_counter() - start)

    app.add_middleware(Timed)


BEARER = HTTPBearer(auto_error=False, description="MNIST_HITL_API_TOKEN, when it is set")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def _token_guard(token: str | None):
    async def check(credentials: Credentials) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a bearer token is required (MNIST_HITL_API_TOKEN)", headers={"WWW-Authenticate": "Bearer"}
            )

    return Depends(check)


async def _picture_bytes(request: Request, max_bytes: int) -> bytes:
    """The picture of a request: a multipart ``file``, or the raw body; over ``max_bytes``: 413, unread."""
    if _content_type(request, max_bytes) == "multipart/form-data":
        files = await _form_files(request, "file", max_files=1)
        return await files[0].read(max_bytes + 1)
    return await _raw_body(request, max_bytes, accepted=("image/",), what="a picture (image/png, image/jpeg)")


async def _uploads(request: Request, max_bytes: int) -> list[tuple[str, bytes]]:
    """The named files of ``POST /import``: multipart ``files`` (repeated), or a raw zip body."""
    if _content_type(request, max_bytes) == "multipart/form-data":
        files = await _form_files(request, "files", max_files=MAX_IMPORT_FILES)
        return [(upload.filename or f"file {number}", await upload.read()) for number, upload in enumerate(files, 1)]
    return [("upload.zip", await _raw_body(request, max_bytes, accepted=("application/zip",), what="a zip"))]


def _content_type(request: Request, max_bytes: int) -> str:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 65536:
        raise PictureTooLargeError(f"the request is {int(declared):,} bytes, over the limit of {max_bytes:,}")
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _form_files(request: Request, field: str, max_files: int) -> list:
    try:
        form = await request.form(max_files=max_files, max_fields=10)
    except Exception as error:  # python-multipart refuses malformed bodies in many ways
        raise HTTPException(422, f"malformed multipart body: {error}") from None
    files = [upload for upload in form.getlist(field) if not isinstance(upload, str)]
    if not files:
        raise HTTPException(422, f"the multipart body needs a picture file in the field `{field}`")
    return files


async def _raw_body(request: Request, max_bytes: int, accepted: tuple[str, ...], what: str) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith(accepted) and content_type not in ("", "application/octet-stream"):
        raise InvalidImageError(f"send {what} or a multipart body, not {content_type}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PictureTooLargeError(f"the request is over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _picture_routes(app: FastAPI, workbench: Workbench, guard) -> None:
    @app.post(
        "/predict",
        response_model=PredictionOut,
        dependencies=[guard],
        openapi_extra=PICTURE_BODY,
        responses=errors(*WRITE_ERRORS, 413, 415),
        tags=["predictions"],
    )
    async def predict(request: Request) -> PredictionOut:
        """Predict a picture (multipart ``file``, or a raw PNG/JPEG body) and store it."""
        data = await _picture_bytes(request, workbench.settings.max_picture_bytes)
        if not data:
            raise HTTPException(422, "the request holds no picture")
        result = workbench.predict_png(data)
        return PredictionOut(
            prediction_id=result.prediction_id,
            predicted_label=result.predicted_label,
            probabilities=result.probabilities,
            model_version=result.model_version,
            latency_ms=result.latency_ms,
        )

    @app.get(
        "/predictions/{prediction_id}",
        response_model=PredictionDetail,
        responses=errors(404, 503),
        tags=["predictions"],
    )
    async def prediction(prediction_id: PredictionId) -> PredictionDetail:
        """A stored prediction with its whole label history, oldest first."""
        row = workbench.store.get_prediction(prediction_id)
        return PredictionDetail(
            prediction_id=row.id,
            predicted_label=row.predicted_label,
            probabilities=row.probabilities,
            model_version=row.model_version,
            latency_ms=row.latency_ms,
            created_at=row.created_at,
            source=row.source,
            labels=workbench.history(prediction_id),
        )

    @app.get(
        "/predictions/{prediction_id}/image",
        response_class=Response,
        tags=["predictions"],
        responses={200: {"content": {"image/png": {}}}, **errors(404, 503)},
    )
    async def image(prediction_id: PredictionId) -> Response:
        """The 28x28 picture the model saw, as a PNG."""
        return Response(workbench.store.get_prediction(prediction_id).png, media_type="image/png")


def _import_route(app: FastAPI, workbench: Workbench, guard) -> None:
    @app.post(
        "/import",
        response_model=ImportOut,
        dependencies=[guard],
        openapi_extra=IMPORT_BODY,
        responses=errors(*WRITE_ERRORS, 413, 415),
        tags=["predictions"],
    )
    async def import_pictures(request: Request) -> ImportOut:
        """Store a batch of unlabelled pictures (multipart ``files``: PNG, JPEG or zips of them; or a zip body).

        Each picture is predicted and stored whole or not at all, with source ``import``; one
        already stored is not stored again; one that cannot be read is refused with its reason.
        """
        uploads = await _uploads(request, workbench.settings.max_picture_bytes)
        workbench.predictor.refresh()  # no model: 503 before anything is stored
        pictures = [ImportedPicture(name=result.pop("path"), **result) for result in workbench.import_uploads(uploads)]
        return ImportOut(
            imported=sum(picture.prediction_id is not None for picture in pictures),
            duplicates=sum(picture.duplicate_of is not None for picture in pictures),
            refused=sum(picture.error is not None for picture in pictures),
            pictures=pictures,
        )


def _label_routes(app: FastAPI, workbench: Workbench, guard) -> None:
    def label(prediction_id: int, digit: int, kind: str) -> LabelOut:
        label_id = workbench.label(prediction_id, digit, kind)
        return LabelOut(label_id=label_id, prediction_id=prediction_id, label=digit, kind=kind)

    @app.post(
        "/predictions/{prediction_id}/labels",
        response_model=LabelOut,
        status_code=201,
        dependencies=[guard],
        responses=errors(*WRITE_ERRORS, 404),
        tags=["labels"],
    )
    async def add_label(prediction_id: PredictionId, body: LabelIn) -> LabelOut:
        """Label a prediction: ``correct`` (the right digit) or ``confirm`` (the model was right)."""
        return label(prediction_id, body.label, body.kind)

    @app.post(
        "/correct",
        response_model=LabelOut,
        status_code=201,
        dependencies=[guard],
        responses=errors(*WRITE_ERRORS, 404),
        tags=["labels"],
    )
    async def correct(body: CorrectIn) -> LabelOut:
        """The older spelling of ``POST /predictions/{id}/labels`` with kind ``correct``."""
        return label(body.prediction_id, body.label, "correct")

    @app.get("/queue", response_model=list[QueueEntry], responses=errors(503), tags=["labels"])
    async def queue(
        limit: Annotated[int, Query(ge=0, le=500)] = 20, strategy: Literal["margin", "entropy", "doubtful"] = "margin"
    ) -> list[QueueEntry]:
        """The unlabelled drawings the deployed model is least sure of, first (some drawn at random)."""
        items = workbench.queue(limit=limit, strategy=strategy)
        return [
            QueueEntry(
                prediction_id=item.prediction_id,
                predicted_label=item.predicted_label,
                probabilities=item.probabilities,
                uncertainty=item.uncertainty,
                model_version=item.model_version,
                source=item.source,
                random=item.random,
            )
            for item in items
        ]


def _service_routes(app: FastAPI, workbench: Workbench, settings: Settings, guard) -> None:
    @app.post(
        "/reload", response_model=ReloadOut, dependencies=[guard], responses=errors(*WRITE_ERRORS), tags=["service"]
    )
    async def reload() -> ReloadOut:
        """Read the deployed model again; answers the version served before and the one served now."""
        old = workbench.predictor.serving_version
        reloaded = workbench.predictor.refresh(force=True)
        return ReloadOut(old_version=old, new_version=workbench.predictor.serving_version, reloaded=reloaded)

    @app.get("/health/live", tags=["service"])
    async def live() -> dict:
        """The process answers."""
        return {"status": "live"}

    @app.get("/health/ready", tags=["service"], responses=errors(503))
    async def ready() -> dict:
        """Ready when a deployed model is loaded (503 while none can be)."""
        return {"status": "ready", "model_version": workbench.predictor.version}

    @app.get("/metrics", response_class=Response, tags=["service"], responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        """Every mnist-hitl process' metrics (this API's requests among them), Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(exporter_registry(settings)), media_type=CONTENT_TYPE_LATEST)


def _inference_routes(app: FastAPI, workbench: Workbench) -> None:
    @app.get("/v2/health/ready", tags=["open inference protocol"], responses=errors(503))
    async def v2_ready() -> dict:
        """Open Inference Protocol v2: ready when the model is."""
        workbench.predictor.refresh()
        return {"ready": True}

    @app.get(f"/v2/models/{MODEL_NAME}", tags=["open inference protocol"], responses=errors(503))
    async def v2_metadata() -> dict:
        """Open Inference Protocol v2 model metadata."""
        return {
            "name": MODEL_NAME,
            "versions": [workbench.predictor.version],
            "platform": "tflite",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 28, 28]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        }

    @app.post(
        f"/v2/models/{MODEL_NAME}/infer",
        response_model=InferOut,
        tags=["open inference protocol"],
        responses=errors(503),
    )
    async def v2_infer(body: InferIn) -> InferOut:
        """Probabilities for MNIST-style digits (FP32 ``[N, 28, 28]``, values 0-1); nothing is stored."""
        tensor = body.inputs[0]
        rows, height, width = tensor.shape
        if (height, width) != (28, 28) or not 1 <= rows <= MAX_TENSOR_ROWS:
            raise HTTPException(422, f"the input's shape must be [N, 28, 28] with 1 <= N <= {MAX_TENSOR_ROWS}")
        if len(tensor.data) != rows * 28 * 28:
            raise HTTPException(422, f"shape {tensor.shape} needs {rows * 784} values, got {len(tensor.data)}")
        digits = np.clip(np.asarray(tensor.data, dtype=np.float32).reshape(rows, 28, 28), 0.0, 1.0)
        probabilities, version = workbench.predictor.predict_batch(digits)
        output = TensorOut(
            name="probabilities",
            shape=[rows, 10],
            datatype="FP32",
            data=probabilities.reshape(-1).astype(float).tolist(),
        )
        return InferOut(model_name=MODEL_NAME, model_version=version, id=body.id, outputs=[output])


def serve_api(port: int | None = None, workers: int = 1, settings: Settings | None = None) -> None:
    """Serve the API with uvicorn on ``MNIST_HITL_APP_HOST``:``port`` (default ``MNIST_HITL_API_PORT``)."""
    import uvicorn

    settings = settings or get_settings()
    port = port or settings.api_port
    print(f"api: http://{settings.app_host}:{port}/docs (home {settings.home})", flush=True)
    uvicorn.run(
        "mnist_hitl.api.routes:app_from_environment",
        factory=True,
        host=settings.app_host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
