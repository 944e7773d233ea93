"""The HTTP API's application (``mnist-hitl api``): one workbench, the routes by resource, uvicorn.

One :class:`~mnist_hitl.workbench.workbench.Workbench` (``source="api"``) serves every request, so a
prediction made over HTTP is a row like any other; routes receive it as a dependency
(:mod:`.dependencies`). The routes that use the store or the model run on FastAPI's thread
pool, never on the event loop, so a stalled database holds up only the requests that need it
(and ``/health/live`` always answers). More throughput comes from more uvicorn workers, each
with its own workbench, all writing to the same SQLite store in WAL mode.

The routes, by resource: :mod:`.predictions`, :mod:`.labels`, :mod:`.service` and the Open
Inference Protocol's :mod:`.inference`. Refused input never reaches the store: every error
becomes a 4xx (or a 503 while no model can be loaded) with a JSON ``detail``. A store that
cannot be reached is a 503 with ``Retry-After``; a full disk a 507, nothing written. What a
client may take of the server is bounded by :mod:`.limits`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import errno
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mnist_hitl import metrics
from mnist_hitl.api import export, inference, labels, predictions, service, team
from mnist_hitl.api.guard import guard
from mnist_hitl.api.limits import uvicorn_limits
from mnist_hitl.api.schemas import declare_security_only_with_a_token
from mnist_hitl.api.service import RETRY_AFTER_SECONDS
from mnist_hitl.api.tokens import named_tokens
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError
from mnist_hitl.preprocess import EmptyDrawingError, InvalidImageError, PictureTooLargeError
from mnist_hitl.store import StoreError
from mnist_hitl.workbench import Workbench


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over one workbench on ``settings``' home (default: the environment's settings)."""
    settings = settings or get_settings()
    tokens = named_tokens(settings)  # a malformed entry stops here, before the store is opened
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
    app.state.workbench, app.state.settings, app.state.tokens = workbench, settings, tokens
    _handle_errors(app)
    _measure(app)
    guard(app, settings)  # the allowed host names only, no writes from another site (.guard)
    declare_security_only_with_a_token(app, settings.api_token is not None or bool(tokens))
    for resource in (predictions, labels, service, inference, export, team):
        app.include_router(resource.router)
    return app


def app_from_environment() -> FastAPI:
    """:func:`create_app` on the environment's settings: uvicorn's factory, in each worker."""
    return create_app(get_settings())


def _problem(status: int, detail: str | list, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _handle_errors(app: FastAPI) -> None:
    statuses = ((PictureTooLargeError, 413), (InvalidImageError, 415), (EmptyDrawingError, 422), (ModelFileError, 503))
    for error_class, status in statuses:
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None  # a model may be deployed soon
        app.add_exception_handler(
            error_class, lambda _, error, status=status, retry=retry: _problem(status, str(error), retry)
        )

    async def store_error(_: Request, error: StoreError) -> JSONResponse:
        text = str(error)
        if text.startswith("no prediction"):
            return _problem(404, text)
        if error.full_disk:
            return _problem(507, text)
        if text.startswith("label"):
            return _problem(422, text)
        return _problem(503, text, headers={"Retry-After": str(RETRY_AFTER_SECONDS)} if error.unavailable else None)

    async def os_error(_: Request, error: OSError) -> JSONResponse:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise error  # a server error like any other
        return _problem(507, f"the disk is full ({error.strerror}): nothing was stored")

    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(OSError, os_error)


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


def serve_api(port: int | None = None, workers: int = 1, settings: Settings | None = None) -> None:
    """Serve the API with uvicorn on ``MNIST_HITL_APP_HOST``:``port`` (default ``MNIST_HITL_API_PORT``)."""
    import uvicorn

    settings = settings or get_settings()
    named_tokens(settings)  # a malformed entry: one line now, rather than a traceback from each worker
    port = port or settings.api_port
    print(f"api: http://{settings.app_host}:{port}/docs (home {settings.home})", flush=True)
    uvicorn.run(
        "mnist_hitl.api.server:app_from_environment",
        factory=True,
        host=settings.app_host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        **uvicorn_limits(settings),
    )
