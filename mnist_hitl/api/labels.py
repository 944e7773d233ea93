"""Labels over HTTP: label a prediction (and the older ``POST /correct``), and the review queue to label from.

Plain functions: FastAPI runs them on its thread pool, so the store never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response

from mnist_hitl.api.dependencies import TOKEN_REQUIRED, CurrentReviewer, CurrentWorkbench
from mnist_hitl.api.schemas import WRITE_ERRORS, CorrectIn, LabelIn, LabelOut, PredictionId, QueueEntry, errors
from mnist_hitl.store import UNKNOWN_REVIEWER
from mnist_hitl.workbench import QueueItem, Workbench

router = APIRouter(tags=["labels"])


def _label(workbench: Workbench, prediction_id: int, digit: int, kind: str, reviewer: str | None) -> LabelOut:
    label_id = workbench.label(prediction_id, digit, kind, reviewer or UNKNOWN_REVIEWER)
    return LabelOut(label_id=label_id, prediction_id=prediction_id, label=digit, kind=kind)


@router.post(
    "/predictions/{prediction_id}/labels",
    response_model=LabelOut,
    status_code=201,
    dependencies=[TOKEN_REQUIRED],
    responses=errors(*WRITE_ERRORS, 404),
)
def add_label(
    prediction_id: PredictionId, body: LabelIn, workbench: CurrentWorkbench, reviewer: CurrentReviewer
) -> LabelOut:
    """Label a prediction: ``correct`` (the right digit) or ``confirm`` (the model was right), by the ``X-Reviewer``;
    or ``adjudicate``, the answer to a drawing the ``adjudicate`` or ``suspect`` queue served: it decides the drawing.
    The reviewer's lease on the drawing ends."""
    return _label(workbench, prediction_id, body.label, body.kind, reviewer)


@router.post(
    "/correct",
    response_model=LabelOut,
    status_code=201,
    dependencies=[TOKEN_REQUIRED],
    responses=errors(*WRITE_ERRORS, 404),
)
def correct(body: CorrectIn, workbench: CurrentWorkbench, reviewer: CurrentReviewer) -> LabelOut:
    """The older spelling of ``POST /predictions/{id}/labels`` with kind ``correct``."""
    return _label(workbench, body.prediction_id, body.label, "correct", reviewer)


@router.get("/queue", response_model=list[QueueEntry], responses=errors(401, 403, 503))
def queue(
    workbench: CurrentWorkbench,
    limit: Annotated[int, Query(ge=0, le=500)] = 20,
    strategy: Literal["margin", "entropy", "doubtful", "suspect", "second-opinion", "adjudicate"] = "margin",
    reviewer: CurrentReviewer = None,
) -> list[QueueItem]:
    """The unlabelled drawings the deployed model is least sure of, first (some drawn at random); or the labels
    it doubts (``doubtful``), the labels confident learning flags (``suspect``, each with its ``reason``), the
    labelled drawings that want a second opinion from this reviewer (``second-opinion``, needs ``X-Reviewer``),
    the disputed drawings with every answer (``adjudicate``). A ``suspect`` or ``adjudicate`` drawing is answered
    with a label of kind ``adjudicate``: it decides the drawing (of kind ``correct``, it would open a dispute).

    With ``X-Reviewer``, what is returned is leased to that reviewer for ``MNIST_HITL_LEASE_SECONDS`` (asking
    again renews it), and what others hold is left out: two reviewers are never given the same drawing at once.
    Their label or undo of a drawing ends their lease on it.
    With named tokens (``MNIST_HITL_API_TOKENS``), the reviewer is the token's holder.
    """
    if strategy == "second-opinion" and reviewer is None:
        raise HTTPException(403, "a second opinion needs the reviewer who gives it: send X-Reviewer")
    return workbench.queue(limit=limit, strategy=strategy, reviewer=reviewer)


def _holder(reviewer: str | None) -> str:
    if reviewer is None:
        raise HTTPException(403, "releasing a lease needs the reviewer who holds it: send X-Reviewer or a named token")
    return reviewer


@router.delete(
    "/queue/{prediction_id}/lease",
    status_code=204,
    response_class=Response,
    dependencies=[TOKEN_REQUIRED],
    responses=errors(*WRITE_ERRORS, 404),
)
def release_lease(prediction_id: PredictionId, workbench: CurrentWorkbench, reviewer: CurrentReviewer) -> Response:
    """Give back a drawing the queue leased to the reviewer (a skip): the queue may give it to others now; 404 if
    they hold no lease on it. (A lease is renewed by asking ``GET /queue`` again while it is the reviewer's.)"""
    if not workbench.release(prediction_id, _holder(reviewer)):
        raise HTTPException(404, f"prediction {prediction_id} is not leased to {reviewer!r}")
    return Response(status_code=204)
