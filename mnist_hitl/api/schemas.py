"""The HTTP API's schema: what each route takes and answers, and the documented bodies and errors.

The answers that carry a library record are made from it, not written again: a prediction
(:class:`~mnist_hitl.store.rows.Prediction`, :class:`~mnist_hitl.workbench.recording.PredictionResult`),
a label (:class:`~mnist_hitl.store.rows.Label`) and a queue item
(:class:`~mnist_hitl.workbench.ranking.QueueItem`) are dataclasses whose fields document
themselves in their ``metadata``, and :func:`record_model` turns one into a pydantic model.
A field added to the record shows in the answer and in the OpenAPI schema with nothing
changed here; a route returns the record itself. The requests, and the answers that are the
API's own, are pydantic models below.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Collection, Mapping
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, Field, create_model

from mnist_hitl.store import MAX_ID, Label, Prediction
from mnist_hitl.workbench import PredictionResult, QueueItem

MODEL_NAME = "mnist"
MAX_TENSOR_ROWS = 1024
PredictionId = Annotated[int, Path(ge=1, le=MAX_ID, description="a prediction's id")]


def record_model(
    record: type,
    name: str,
    description: str,
    leave_out: Collection[str] = (),
    renamed: Mapping[str, str] | None = None,
    **more: Any,
) -> type[BaseModel]:
    """A pydantic model answering a library record's fields, each documented by its ``metadata``.

    The record's own fields come first, then those it inherits.

    Args:
        record: the dataclass.
        name: the model's name in the OpenAPI schema.
        description: what the answer is, for the schema.
        leave_out: fields not answered (pictures, arrays).
        renamed: fields answered under another name, read from the record under their own
            (``{"id": "prediction_id"}``).
        more: further fields, as :func:`pydantic.create_model` takes them.
    """
    hints, renamed = typing.get_type_hints(record), renamed or {}
    own = vars(record).get("__annotations__", {})
    answered = {}
    for item in sorted(dataclasses.fields(record), key=lambda item: item.name not in own):
        if item.name not in leave_out:
            alias = {"validation_alias": item.name} if item.name in renamed else {}
            answered[renamed.get(item.name, item.name)] = (hints[item.name], Field(**item.metadata, **alias))
    return create_model(name, __doc__=description, **answered, **more)


class Problem(BaseModel):
    detail: str | list


PredictionOut = record_model(
    PredictionResult, "PredictionOut", "A prediction just made and stored.", leave_out=("png", "source", "digit")
)
HistoryEntry = record_model(
    Label, "HistoryEntry", "One entry of a prediction's label history.", leave_out=("prediction_id",)
)
PredictionDetail = record_model(
    Prediction,
    "PredictionDetail",
    "A stored prediction with its whole label history, oldest first.",
    leave_out=("png",),
    renamed={"id": "prediction_id"},
    labels=(list[HistoryEntry], Field(description="every label given, oldest first; the latest counts")),
)
QueueEntry = record_model(
    QueueItem,
    "QueueEntry",
    "A drawing to review, scored by the deployed model (its picture: GET /predictions/{id}/image).",
    leave_out=("png",),
)


def _a_json_number(value: object) -> object:
    """Refuse what pydantic would read as an integer but JSON Schema does not: true, false, "7"."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


JsonInt = Annotated[int, BeforeValidator(_a_json_number)]


class LabelIn(BaseModel):
    label: JsonInt = Field(ge=0, le=9, description="the true digit")
    kind: Literal["correct", "confirm", "adjudicate"] = "correct"  # adjudicate: a disputed or suspect drawing decided


class CorrectIn(BaseModel):
    prediction_id: JsonInt = Field(ge=1, description="a prediction's id (one no prediction has: 404)")
    label: JsonInt = Field(ge=0, le=9)


class LabelOut(BaseModel):
    label_id: int
    prediction_id: int
    label: int
    kind: str


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


Finite = Annotated[float, Field(allow_inf_nan=False)]
Parameters = Annotated[dict[str, Any], Field(description="the protocol's parameters, by name")]


class TensorIn(BaseModel):
    name: Literal["input"] = Field(description="the model's input (GET /v2/models/mnist)")
    shape: tuple[Annotated[int, Field(ge=1, le=MAX_TENSOR_ROWS)], Literal[28], Literal[28]] = Field(
        description=f"[N, 28, 28], 1 <= N <= {MAX_TENSOR_ROWS}"
    )
    datatype: Literal["FP32"]
    parameters: Parameters = {}
    data: list[Finite] | None = Field(
        None,
        description="N x 28 x 28 values, row-major, flattened (MNIST-style: 0-1, white ink on black); absent when"
        " the tensor's bytes follow the JSON (parameter `binary_data_size`, binary tensor data extension)",
    )


class OutputIn(BaseModel):
    name: Literal["probabilities"]
    parameters: Parameters = Field({}, description="`binary_data`: true for the tensor's bytes after the JSON")


class InferIn(BaseModel):
    id: str | None = None
    parameters: Parameters = Field({}, description="`binary_data_output`: true for every output's bytes after the JSON")
    inputs: list[TensorIn] = Field(min_length=1, max_length=1)
    outputs: list[OutputIn] | None = Field(None, max_length=1)


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="`binary_data_size`, when the data follow the JSON")
    data: list[float] | None = Field(None, description="row-major, flattened; absent when sent in binary")


class InferOut(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[TensorOut]


class ProtocolError(BaseModel):
    error: str


def protocol_errors(*codes: int) -> dict:
    """The errors of an Open Inference Protocol route: ``{"error": "..."}``, as the protocol's clients read them."""
    return {code: {"model": ProtocolError} for code in codes}


def inline_schema(model: type[BaseModel]) -> dict:
    """``model``'s JSON schema with its nested models written in place, for a request body declared by hand."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(item) for item in node] if isinstance(node, list) else node

    return resolve(schema)


def declare_security_only_with_a_token(app, token_set: bool) -> None:
    """Make ``app``'s OpenAPI schema declare the bearer token only when one is set (``MNIST_HITL_API_TOKEN``, or
    named tokens: :mod:`.tokens`).

    The token check is a dependency of the writing routes either way, and FastAPI declares its
    security scheme either way; without a token nothing is asked, and the schema says so.
    """
    generate = app.openapi

    def schema() -> dict:
        document = generate()
        if not token_set:
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    if isinstance(operation, dict):
                        operation.pop("security", None)
            document.get("components", {}).pop("securitySchemes", None)
        return document

    app.openapi = schema


def errors(*codes: int) -> dict:
    return {code: {"model": Problem} for code in (*codes, 422)}


WRITE_ERRORS = (400, 401, 403, 503)  # a body that is not JSON; no token; a write from another site (.guard)
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
                    "properties": {
                        "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
