"""Labels over HTTP: ``GET /export``, every labelled drawing with its current label, as CSV, JSON lines, a zipped
image folder or Parquet.

The export is read from the store at once. CSV and JSON lines are streamed out row by row; the
image folder (a zip) and the Parquet file are written first to a temporary file, in memory while
small, then streamed from it. The Hugging Face data set is the command's (``mnist-hitl export``).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from typing import IO, Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from mnist_hitl.api.dependencies import CurrentWorkbench
from mnist_hitl.api.schemas import errors
from mnist_hitl.store import MAX_ID
from mnist_hitl.workbench.export import (
    csv_text,
    jsonl_text,
    labelled_pictures,
    since_moment,
    write_imagefolder_zip,
    write_parquet,
)

router = APIRouter(tags=["labels"])
ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def iso_only(value: object) -> object:
    """Refuse what pydantic would otherwise read as a date (a number of seconds): only ISO 8601 text passes."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("not an ISO 8601 date or date and time (2026-01-31, 2026-01-31T12:00:00Z)")
    return value


MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
    "imagefolder": "application/zip",
    "parquet": "application/vnd.apache.parquet",
}
FILE_NAMES = {"imagefolder": "mnist-hitl-labels.zip", "parquet": "mnist-hitl-labels.parquet"}
IN_MEMORY_BYTES = 16 * 2**20  # a larger zip or Parquet file goes to a temporary file on disk
CHUNK_BYTES = 2**16


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {media.split(";")[0]: {} for media in MEDIA_TYPES.values()}}, **errors(503)},
)
def export(
    workbench: CurrentWorkbench,
    format: Annotated[
        Literal["csv", "jsonl", "imagefolder", "parquet"],
        Query(description="csv, JSON lines, imagefolder (a zip: <digit>/<id>.png and labels.csv) or parquet"),
    ] = "csv",
    since: Annotated[
        datetime | date | None,
        BeforeValidator(iso_only),
        Query(description="only labels given at or after this date or time (ISO 8601; UTC unless it says)"),
    ] = None,
    since_label_id: Annotated[int, Query(ge=0, le=MAX_ID, description="only labels newer than this label id")] = 0,
    corrections_only: Annotated[bool, Query(description="only the drawings a person corrected")] = False,
) -> StreamingResponse:
    """Every labelled drawing once, by prediction id, with its current label (an undone one left out).

    Each row: ``prediction_id``, ``label``, ``kind``, ``labelled_at``, ``label_id``,
    ``predicted_label``, ``model_version``, ``source``, ``predicted_at`` and the 28x28 PNG: in base64
    (``png_base64``) in CSV and JSON lines, a file named by ``file_name`` in the image folder (unzipped,
    ``datasets.load_dataset("imagefolder", data_dir=...)`` loads it), ``image`` in Parquet.
    """
    moment = None if since is None else since_moment(since.isoformat())
    pictures = labelled_pictures(workbench.store, since_label_id, corrections_only, moment)
    name = FILE_NAMES.get(format, f"mnist-hitl-labels.{format}")
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    if format in ("csv", "jsonl"):
        text = csv_text(pictures) if format == "csv" else jsonl_text(pictures)
        return StreamingResponse((piece.encode() for piece in text), media_type=MEDIA_TYPES[format], headers=headers)
    built = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY_BYTES)  # noqa: SIM115 (_chunks closes it, once sent)
    try:
        (write_imagefolder_zip if format == "imagefolder" else write_parquet)(pictures, built)
        headers["Content-Length"] = str(built.tell())
        built.seek(0)
    except BaseException:
        built.close()
        raise
    return StreamingResponse(_chunks(built), media_type=MEDIA_TYPES[format], headers=headers)


def _chunks(built: IO[bytes]) -> Iterator[bytes]:
    """The file's bytes, piece by piece; closed (and removed, if on disk) at the end or when the client leaves."""
    with built:
        while piece := built.read(CHUNK_BYTES):
            yield piece
