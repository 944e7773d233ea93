"""The service itself: reload the deployed model, liveness and readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from mnist_hitl.api.dependencies import TOKEN_REQUIRED, CurrentSettings, CurrentWorkbench
from mnist_hitl.api.schemas import WRITE_ERRORS, ReloadOut, errors
from mnist_hitl.services.exporter import exporter_registry

router = APIRouter(tags=["service"])


@router.post("/reload", response_model=ReloadOut, dependencies=[TOKEN_REQUIRED], responses=errors(*WRITE_ERRORS))
async def reload(workbench: CurrentWorkbench) -> ReloadOut:
    """Read the deployed model again; answers the version served before and the one served now."""
    old = workbench.serving_version
    reloaded = workbench.refresh_model(force=True)
    return ReloadOut(old_version=old, new_version=workbench.serving_version, reloaded=reloaded)


@router.get("/health/live")
async def live() -> dict:
    """The process answers."""
    return {"status": "live"}


@router.get("/health/ready", responses=errors(503))
async def ready(workbench: CurrentWorkbench) -> dict:
    """Ready when a deployed model is loaded (503 while none can be)."""
    return {"status": "ready", "model_version": workbench.model_version}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def prometheus(settings: CurrentSettings) -> Response:
    """Every mnist-hitl process' metrics (this API's requests among them), Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(exporter_registry(settings)), media_type=CONTENT_TYPE_LATEST)
