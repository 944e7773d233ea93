"""Labels over HTTP: ``GET /export``, every labelled drawing with its current label, as CSV or JSON lines.

The export is read from the store at once and streamed out row by row; the folder formats
(image folders, a Hugging Face data set) are the command's (``mnist-hitl export``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from mnist_hitl.api.dependencies import CurrentWorkbench
from mnist_hitl.api.schemas import errors
from mnist_hitl.store import MAX_ID
from mnist_hitl.workbench.export import csv_text, jsonl_text, labelled_pictures

router = APIRouter(tags=["labels"])
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl; charset=utf-8"}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/jsonl": {}}}, **errors(503)},
)
def export(
    workbench: CurrentWorkbench,
    format: Annotated[Literal["csv", "jsonl"], Query(description="csv, or JSON lines")] = "csv",
    since_label_id: Annotated[int, Query(ge=0, le=MAX_ID, description="only labels newer than this label id")] = 0,
    corrections_only: Annotated[bool, Query(description="only the drawings a person corrected")] = False,
) -> StreamingResponse:
    """Every labelled drawing once, by prediction id, with its current label (an undone one left out).

    Each row: ``prediction_id``, ``label``, ``kind``, ``labelled_at``, ``label_id``,
    ``predicted_label``, ``model_version``, ``source``, ``predicted_at`` and the 28x28 PNG in
    base64 (``png_base64``).
    """
    pictures = labelled_pictures(workbench.store, since_label_id, corrections_only)
    text = csv_text(pictures) if format == "csv" else jsonl_text(pictures)
    name = f"mnist-hitl-labels.{format}"
    return StreamingResponse(
        (piece.encode() for piece in text),
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
