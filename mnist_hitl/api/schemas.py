"""The HTTP API's schema: what each route takes and answers (pydantic), and the documented bodies and errors.

Kept apart from :mod:`mnist_hitl.api.routes`, which holds the routes, so each reads on its own.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from mnist_hitl.store import MAX_ID

MODEL_NAME = "mnist"
MAX_TENSOR_ROWS = 1024
PredictionId = Annotated[int, Path(ge=1, le=MAX_ID, description="a prediction's id")]


class Problem(BaseModel):
    detail: str | list


class PredictionOut(BaseModel):
    prediction_id: int
    predicted_label: int
    probabilities: list[float] = Field(min_length=10, max_length=10)
    model_version: str
    latency_ms: float


class LabelIn(BaseModel):
    label: int = Field(ge=0, le=9, description="the true digit")
    kind: Literal["correct", "confirm"] = "correct"


class CorrectIn(BaseModel):
    prediction_id: int = Field(ge=1, le=MAX_ID)
    label: int = Field(ge=0, le=9)


class LabelOut(BaseModel):
    label_id: int
    prediction_id: int
    label: int
    kind: str


class HistoryEntry(BaseModel):
    id: int
    label: int | None
    kind: str
    created_at: str


class PredictionDetail(PredictionOut):
    created_at: str
    source: str
    labels: list[HistoryEntry]


class QueueEntry(BaseModel):
    prediction_id: int
    predicted_label: int
    probabilities: list[float]
    uncertainty: float
    model_version: str
    source: str
    random: bool


class ImportedPicture(BaseModel):
    name: str = Field(description="the upload's file name; name/member inside a zip")
    prediction_id: int | None = Field(None, description="stored now, unlabelled")
    predicted_label: int | None = None
    model_version: str | None = None
    duplicate_of: int | None = Field(None, description="the same picture was stored already, as this prediction")
    error: str | None = Field(None, description="why the picture was refused")


class ImportOut(BaseModel):
    imported: int
    duplicates: int
    refused: int
    pictures: list[ImportedPicture]


class ReloadOut(BaseModel):
    old_version: str | None
    new_version: str
    reloaded: bool


class TensorIn(BaseModel):
    name: str = "input"
    shape: list[int] = Field(min_length=3, max_length=3, description="[N, 28, 28]")
    datatype: Literal["FP32"]
    data: list[Annotated[float, Field(allow_inf_nan=False)]] = Field(description="row-major, flattened")


class InferIn(BaseModel):
    id: str | None = None
    inputs: list[TensorIn] = Field(min_length=1, max_length=1)


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferOut(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


def errors(*codes: int) -> dict:
    return {code: {"model": Problem} for code in (*codes, 422)}


WRITE_ERRORS = (401, 503)
PICTURE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


MAX_IMPORT_FILES = 1000
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
