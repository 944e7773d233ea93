"""Predictions over HTTP: predict a picture, import a batch into the pool, read a prediction and its picture.

The store and the model are used on FastAPI's thread pool, never on the event loop: a stalled
database holds up the requests that need it, not the server (its health, the other routes).
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mnist_hitl.api import bodies
from mnist_hitl.api.dependencies import TOKEN_REQUIRED, CurrentWorkbench
from mnist_hitl.api.schemas import (
    IMPORT_BODY,
    PICTURE_BODY,
    WRITE_ERRORS,
    ImportedPicture,
    ImportOut,
    PredictionDetail,
    PredictionId,
    PredictionOut,
    errors,
)
from mnist_hitl.workbench import PredictionResult, Workbench

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    response_model=PredictionOut,
    dependencies=[TOKEN_REQUIRED],
    openapi_extra=PICTURE_BODY,
    responses=errors(*WRITE_ERRORS, 413, 415),
)
async def predict(request: Request, workbench: CurrentWorkbench) -> PredictionResult:
    """Predict a picture (multipart ``file``, or a raw PNG/JPEG body) and store it."""
    data = await bodies.picture_bytes(request, workbench.settings.max_picture_bytes)
    if not data:
        raise HTTPException(422, "the request holds no picture")
    return await run_in_threadpool(workbench.predict_png, data)


@router.get("/predictions/{prediction_id}", response_model=PredictionDetail, responses=errors(404, 503))
def prediction(prediction_id: PredictionId, workbench: CurrentWorkbench) -> dict:
    """A stored prediction with its whole label history, oldest first."""
    return {**asdict(workbench.prediction(prediction_id)), "labels": workbench.history(prediction_id)}


@router.get(
    "/predictions/{prediction_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **errors(404, 503)},
)
def image(prediction_id: PredictionId, workbench: CurrentWorkbench) -> Response:
    """The 28x28 picture the model saw, as a PNG."""
    return Response(workbench.prediction(prediction_id).png, media_type="image/png")


@router.post(
    "/import",
    response_model=ImportOut,
    dependencies=[TOKEN_REQUIRED],
    openapi_extra=IMPORT_BODY,
    responses=errors(*WRITE_ERRORS, 413, 415),
)
async def import_pictures(request: Request, workbench: CurrentWorkbench) -> ImportOut:
    """Store a batch of unlabelled pictures (multipart ``files``: PNG, JPEG or zips of them; or a zip body).

    Each picture is predicted and stored whole or not at all, with source ``import``; one
    already stored is not stored again; one that cannot be read is refused with its reason.
    """
    uploads = await bodies.uploads(request, workbench.settings.max_picture_bytes)
    pictures = await run_in_threadpool(_import, workbench, uploads)
    return ImportOut(
        imported=sum(picture.prediction_id is not None for picture in pictures),
        duplicates=sum(picture.duplicate_of is not None for picture in pictures),
        refused=sum(picture.error is not None for picture in pictures),
        pictures=pictures,
    )


def _import(workbench: Workbench, uploads: list[tuple[str, bytes]]) -> list[ImportedPicture]:
    workbench.refresh_model()  # no model: 503 before anything is stored
    return [ImportedPicture(name=result.pop("path"), **result) for result in workbench.import_uploads(uploads)]
