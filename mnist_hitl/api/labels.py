"""Labels over HTTP: label a prediction (and the older ``POST /correct``), and the review queue to label from.

Plain functions: FastAPI runs them on its thread pool, so the store never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from mnist_hitl.api.dependencies import TOKEN_REQUIRED, CurrentWorkbench
from mnist_hitl.api.schemas import WRITE_ERRORS, CorrectIn, LabelIn, LabelOut, PredictionId, QueueEntry, errors
from mnist_hitl.workbench import QueueItem, Workbench

router = APIRouter(tags=["labels"])


def _label(workbench: Workbench, prediction_id: int, digit: int, kind: str) -> LabelOut:
    label_id = workbench.label(prediction_id, digit, kind)
    return LabelOut(label_id=label_id, prediction_id=prediction_id, label=digit, kind=kind)


@router.post(
    "/predictions/{prediction_id}/labels",
    response_model=LabelOut,
    status_code=201,
    dependencies=[TOKEN_REQUIRED],
    responses=errors(*WRITE_ERRORS, 404),
)
def add_label(prediction_id: PredictionId, body: LabelIn, workbench: CurrentWorkbench) -> LabelOut:
    """Label a prediction: ``correct`` (the right digit) or ``confirm`` (the model was right)."""
    return _label(workbench, prediction_id, body.label, body.kind)


@router.post(
    "/correct",
    response_model=LabelOut,
    status_code=201,
    dependencies=[TOKEN_REQUIRED],
    responses=errors(*WRITE_ERRORS, 404),
)
def correct(body: CorrectIn, workbench: CurrentWorkbench) -> LabelOut:
    """The older spelling of ``POST /predictions/{id}/labels`` with kind ``correct``."""
    return _label(workbench, body.prediction_id, body.label, "correct")


@router.get("/queue", response_model=list[QueueEntry], responses=errors(503))
def queue(
    workbench: CurrentWorkbench,
    limit: Annotated[int, Query(ge=0, le=500)] = 20,
    strategy: Literal["margin", "entropy", "doubtful"] = "margin",
) -> list[QueueItem]:
    """The unlabelled drawings the deployed model is least sure of, first (some drawn at random)."""
    return workbench.queue(limit=limit, strategy=strategy)
