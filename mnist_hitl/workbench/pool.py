"""The pool: pictures imported from files, folders (recursively) and zips of PNG or JPEG.

Each picture is preprocessed like a drawing, then looked up by the hash of the 28x28 PNG the
store would keep: the same picture imported twice is stored once (and not run through the
model again), however its file is named. A new one is predicted and stored with source
``import`` and no label, in one transaction, so it is stored whole or not at all. A picture
that cannot be read is skipped with the reason; the others carry on. Inside folders and
zips only ``.png``, ``.jpg`` and ``.jpeg`` files are taken (hidden files and ``__MACOSX``
left out); a file named on the command line is always tried.

An export (:mod:`.export`: an image folder, or its zip, with its ``labels.csv``; a CSV, JSON lines
or Parquet file) comes back labelled. Its pictures are the 28x28 PNGs a model saw, so each is
stored byte for byte, not preprocessed again, and read by the model deployed here (its
prediction and version are this home's, its source ``import``). Then its label is appended,
by the reviewer who imports it, with its kind, save for a ``confirm`` of a digit this model
reads otherwise, which becomes a ``correct`` (a row without a kind is a ``confirm`` when the
model agrees). A picture stored already gets the label only if its current label is another
digit, so importing an export twice, or again after an interruption, adds nothing twice.
"""

from __future__ import annotations

import io
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from mnist_hitl import metrics
from mnist_hitl.config import Settings
from mnist_hitl.model import Predictor
from mnist_hitl.names import IMPORT, UNDO
from mnist_hitl.preprocess import (
    EmptyDrawingError,
    InvalidImageError,
    decode_image,
    decode_stored_png,
    encode_png,
    read_picture_file,
    to_mnist,
)
from mnist_hitl.store import UNKNOWN_REVIEWER, DuplicateError, Store, content_hash
from mnist_hitl.workbench.export import is_export, read_export
from mnist_hitl.workbench.recording import predict_and_store

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
PROGRESS_FROM = 50  # pictures: a smaller import shows no progress bar


@dataclass(frozen=True)
class Entry:
    """One picture to import (``read`` gives its bytes), or a path refused before reading (``error``).

    A row of an export has its ``label`` (and ``kind``, if the export says).
    """

    path: str
    read: Callable[[], bytes] | None = None
    error: str | None = None
    label: int | None = None
    kind: str | None = None


def import_pictures(
    store: Store,
    predictor: Predictor,
    settings: Settings,
    paths: Iterable[str | Path],
    progress: bool = False,
    reviewer: str = UNKNOWN_REVIEWER,
) -> Iterator[dict]:
    """Import every picture under ``paths``, and the labelled pictures of the exports among them; yields one dict
    per picture, in order.

    Each dict has ``path``, then ``prediction_id`` (stored; with ``predicted_label`` and
    ``model_version``), ``duplicate_of`` (stored already, as that prediction) or ``error``. A row of
    an export also has its ``label``, ``kind`` and ``label_id`` (None: the label was there already).

    Args:
        reviewer: who gives the labels of the exports.

    Raises:
        ModelFileError: no deployed model; nothing more is imported.
    """
    with ExitStack() as open_zips:
        entries = list(_entries([Path(p) for p in paths], open_zips, settings.max_picture_bytes))
        from tqdm import tqdm

        show = progress and len(entries) > PROGRESS_FROM
        with tqdm(total=len(entries), unit="picture", file=sys.stderr, disable=not show) as bar:
            for entry in entries:
                if entry.error:
                    yield {"path": entry.path, "error": entry.error}
                elif entry.label is not None:
                    yield import_labelled(store, predictor, entry, reviewer)
                else:
                    yield import_one(store, predictor, settings, entry)
                bar.update()


def import_uploads(
    store: Store, predictor: Predictor, settings: Settings, uploads: Iterable[tuple[str, bytes]]
) -> Iterator[dict]:
    """Import pictures received as bytes (the HTTP API's ``POST /import``): each a PNG or JPEG, or a zip of them.

    Yields one dict per picture as :func:`import_pictures` does, ``path`` being the upload's name
    (``name/member`` inside a zip).
    """
    with ExitStack() as open_zips:
        for name, data in uploads:
            if zipfile.is_zipfile(io.BytesIO(data)):
                entries = _zip_entries(io.BytesIO(data), name, open_zips, settings.max_picture_bytes)
            else:
                entries = [Entry(name, read=lambda data=data: data)]
            for entry in entries:
                yield (
                    {"path": entry.path, "error": entry.error}
                    if entry.error
                    else import_one(store, predictor, settings, entry)
                )


def import_one(store: Store, predictor: Predictor, settings: Settings, entry: Entry) -> dict:
    """Import one picture (see :func:`import_pictures`)."""
    start = time.perf_counter()
    try:
        digit = to_mnist(decode_image(entry.read(), settings.max_picture_bytes, settings.max_picture_pixels))
    except (InvalidImageError, EmptyDrawingError) as error:
        metrics.record_refusal(type(error).__name__)
        return {"path": entry.path, "error": str(error)}
    except (OSError, zipfile.BadZipFile, EOFError) as error:  # unreadable file, damaged zip member
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return {"path": entry.path, "error": f"cannot read it: {reason or type(error).__name__}"}
    png = encode_png(digit)
    if (existing := store.find_import(content_hash(png))) is not None:
        return {"path": entry.path, "duplicate_of": existing}
    try:
        result = predict_and_store(store, predictor, digit, IMPORT, start, png)
    except DuplicateError as error:  # another process imported it meanwhile
        return {"path": entry.path, "duplicate_of": error.prediction_id}
    return {
        "path": entry.path,
        "prediction_id": result.prediction_id,
        "predicted_label": result.predicted_label,
        "model_version": result.model_version,
    }


def import_labelled(store: Store, predictor: Predictor, entry: Entry, reviewer: str) -> dict:
    """Import one labelled picture of an export, its PNG stored as it is, then its label (see the module's notes)."""
    start = time.perf_counter()
    png = entry.read()
    try:
        digit = decode_stored_png(png)
    except InvalidImageError as error:
        metrics.record_refusal(type(error).__name__)
        return {"path": entry.path, "error": str(error)}
    existing = store.find_import(content_hash(png))
    if existing is None:
        try:
            result = predict_and_store(store, predictor, digit, IMPORT, start, png)
        except DuplicateError as error:  # another process imported it meanwhile
            existing = error.prediction_id
        else:
            prediction_id, predicted = result.prediction_id, result.predicted_label
            outcome = {"prediction_id": prediction_id, "predicted_label": predicted}
            outcome["model_version"] = result.model_version
    if existing is not None:
        prediction_id, predicted = existing, store.get_prediction(existing).predicted_label
        outcome = {"duplicate_of": existing}
        latest = store.labels(existing)[-1:]
        if latest and latest[0].kind != UNDO and latest[0].label == entry.label:  # labelled so already
            return {"path": entry.path, **outcome, "label": entry.label, "kind": latest[0].kind, "label_id": None}
    kind = "correct" if entry.kind == "correct" or entry.label != predicted else "confirm"
    label_id = store.add_label(prediction_id, entry.label, kind, reviewer)
    metrics.record_label(entry.label, kind)
    return {"path": entry.path, **outcome, "label": entry.label, "kind": kind, "label_id": label_id}


def _export_entries(path: Path, max_bytes: int) -> Iterator[Entry]:
    for row in read_export(path, max_bytes):
        if row.error:
            yield Entry(row.path, error=row.error)
        else:
            yield Entry(row.path, read=lambda png=row.png: png, label=row.label, kind=row.kind)


def _entries(paths: list[Path], open_zips: ExitStack, max_bytes: int) -> Iterator[Entry]:
    for path in paths:
        if is_export(path):
            yield from _export_entries(path, max_bytes)
        elif path.is_dir():
            for file in _files_under(path):
                yield from (
                    _zip_entries(file, str(file), open_zips, max_bytes)
                    if file.suffix.lower() == ".zip"
                    else [_file_entry(file, max_bytes)]
                )
        elif not path.exists():
            yield Entry(str(path), error="no such file or folder")
        elif path.suffix.lower() == ".zip":
            yield from _zip_entries(path, str(path), open_zips, max_bytes)
        else:
            yield _file_entry(path, max_bytes)


def _files_under(folder: Path) -> Iterator[Path]:
    """Picture and zip files under ``folder``, sorted, without following links to folders or hidden names."""
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not _hidden(name))
        for name in sorted(files):
            if not _hidden(name) and Path(name).suffix.lower() in (*PICTURE_SUFFIXES, ".zip"):
                yield Path(root) / name


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _file_entry(path: Path, max_bytes: int) -> Entry:
    return Entry(str(path), read=lambda: read_picture_file(path, max_bytes))


def _zip_entries(source: Path | IO[bytes], path: str, open_zips: ExitStack, max_bytes: int) -> Iterator[Entry]:
    try:
        archive = open_zips.enter_context(zipfile.ZipFile(source))
        members = archive.infolist()
    except (OSError, zipfile.BadZipFile) as error:
        yield Entry(path, error=f"not a readable zip: {error}")
        return
    for member in members:
        parts = Path(member.filename).parts
        if (
            member.is_dir()
            or any(_hidden(part) for part in parts)
            or Path(member.filename).suffix.lower() not in PICTURE_SUFFIXES
        ):
            continue
        name = f"{path}/{member.filename}"
        if member.file_size > max_bytes:
            yield Entry(
                name, error=f"the picture file is {member.file_size:,} bytes, over the limit of {max_bytes:,} bytes"
            )
        else:
            yield Entry(name, read=lambda member=member: archive.read(member))
