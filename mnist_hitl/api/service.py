"""The service itself: reload the deployed model, liveness and readiness, Prometheus metrics.

Liveness touches nothing but the event loop: a stalled database must not get a healthy process
restarted. Readiness asks the store and the model, each on the thread pool, and waits at most
``MNIST_HITL_HEALTH_TIMEOUT`` for the store: a database that does not answer makes the API not
ready (503 with ``Retry-After``), not a probe that hangs. One store check runs at a time; a
probe that comes while it still hangs waits for that one.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mnist_hitl.api.dependencies import TOKEN_REQUIRED, CurrentReadiness, CurrentSettings, CurrentWorkbench, Readiness
from mnist_hitl.api.schemas import WRITE_ERRORS, ReloadOut, errors
from mnist_hitl.model import ModelFileError, deployed_model, read_export
from mnist_hitl.services.exporter import exporter_registry
from mnist_hitl.store import StoreError
from mnist_hitl.workbench import Workbench

router = APIRouter(tags=["service"])
RETRY_AFTER_SECONDS = 5  # what a 503 of the store or the model tells a client to wait


@router.post("/reload", response_model=ReloadOut, dependencies=[TOKEN_REQUIRED], responses=errors(*WRITE_ERRORS))
def reload(workbench: CurrentWorkbench) -> ReloadOut:
    """Read the deployed model again; answers the version served before and the one served now."""
    old = workbench.serving_version
    reloaded = workbench.refresh_model(force=True)
    return ReloadOut(old_version=old, new_version=workbench.serving_version, reloaded=reloaded)


@router.get("/health/live")
async def live() -> dict:
    """The process answers (nothing else is asked: not the store, not the model)."""
    return {"status": "live"}


@router.get("/health/ready", responses=errors(503))
async def ready(workbench: CurrentWorkbench, settings: CurrentSettings, readiness: CurrentReadiness) -> JSONResponse:
    """Ready when the store answers and a deployed model is loaded; else 503 saying which is not."""
    store = await _store_problem(readiness, workbench, settings.health_timeout)
    try:
        model = await run_in_threadpool(lambda: workbench.model_version)
    except ModelFileError as error:
        model = None
        problems = [problem for problem in (store, str(error)) if problem]
    else:
        problems = [store] if store else []
    files = await run_in_threadpool(_export_problem, workbench, readiness) if model else None
    report = {"store": store or "ok", "model_version": model, "model_files": files or "ok"}
    if not problems:
        return JSONResponse({"status": "ready", **report})
    detail = "not ready: " + "; ".join(problems)
    return JSONResponse({"detail": detail, **report}, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def _export_problem(workbench: Workbench, readiness: Readiness) -> str | None:
    """What is wrong with the deployed export on disk (None: it is as deployed).

    The model serves from memory, so an export rewritten in place changes nothing until a reload or a
    restart, which would then fail: readiness says so now (still ready: this process serves). The
    checksum is computed again only when the file changed.
    """
    try:
        deployed = deployed_model(workbench.settings.models_dir)
        status = deployed.tflite_path.stat()
        key = (str(deployed.tflite_path), status.st_mtime_ns, status.st_size, status.st_ino)
        if readiness.export_checked != key:
            read_export(deployed)
            readiness.export_checked = key
    except (ModelFileError, OSError) as error:
        readiness.export_checked = None
        text = error.strerror if isinstance(error, OSError) else str(error)
        return f"{text}: this process serves its model from memory, but a reload or a restart would fail"
    return None


async def _store_problem(readiness: Readiness, workbench: Workbench, timeout: float) -> str | None:
    """What is wrong with the store (None: it answered), waiting for it at most ``timeout`` seconds."""
    pending = readiness.store_check
    if pending is None or pending.done():
        # A cheap read through the store's own connection handling (the health check's one use of the store).
        pending = asyncio.ensure_future(run_in_threadpool(lambda: workbench.store.schema_version))
        pending.add_done_callback(lambda task: task.cancelled() or task.exception())
        readiness.store_check = pending
    try:
        await asyncio.wait_for(asyncio.shield(pending), timeout)
    except TimeoutError:
        return f"the store did not answer within {timeout:g} s (MNIST_HITL_HEALTH_TIMEOUT)"
    except StoreError as error:
        return str(error)
    return None


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def prometheus(settings: CurrentSettings) -> Response:
    """Every mnist-hitl process' metrics (this API's requests among them), Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(exporter_registry(settings)), media_type=CONTENT_TYPE_LATEST)
