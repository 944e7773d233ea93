"""Labels leave in standard formats (CSV, JSON lines, an image folder, Parquet, a Hugging Face data set) and come back.

An export holds every labelled drawing once, with its current label (the latest; an undone
label leaves its drawing out), in the order of prediction ids, so the same store gives the
same export. Each row carries the 28x28 picture the model saw (a PNG), what it predicted, the
model version, the label's kind and time. The formats, for the tools people take labels to:

- ``csv`` and ``jsonl``: one file, a row or a line per label, the PNG in base64 (``png_base64``);
- ``imagefolder``: ``<digit>/<prediction_id>.png`` and the table beside them in ``labels.csv``
  (``file_name`` instead of the picture), the layout Hugging Face ``datasets`` loads as
  ``load_dataset("imagefolder", data_dir=...)``, torchvision as ``ImageFolder``, Keras as
  ``image_dataset_from_directory``; the same layout zipped is :func:`write_imagefolder_zip`;
- ``parquet``: one file, the CSV's columns and the PNG in ``image`` as ``datasets`` stores an
  ``Image`` (``{bytes, path}``), its features in the schema's metadata, so
  ``load_dataset("parquet", data_files=...)`` gives back an ``Image`` and a ``ClassLabel``;
- ``hf``: a ``datasets.Dataset`` saved with ``save_to_disk`` (``datasets.load_from_disk``), the
  picture an ``Image`` feature, the label a ``ClassLabel`` of the ten digits.

:func:`read_export` reads the first four back (for ``mnist-hitl import``), a row at a time, each
with its picture and its label or the reason it cannot be read.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import operator
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from mnist_hitl.store import Store

FORMATS = ("csv", "jsonl", "imagefolder", "parquet", "hf")
ALIASES = {"folders": "imagefolder"}  # the image folder's former name
FILE_FORMATS = ("csv", "jsonl", "parquet")  # the others write a folder
TABLE = "labels.csv"  # an image folder's table, beside the pictures
DIGITS = [str(digit) for digit in range(10)]
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # every zip member's time: the same store gives the same zip


@dataclass(frozen=True)
class LabelledPicture:
    """One exported row: a labelled prediction, its current label and its picture."""

    prediction_id: int
    label: int
    kind: str
    labelled_at: str
    label_id: int
    predicted_label: int
    model_version: str
    source: str
    predicted_at: str
    png: bytes = field(repr=False)

    def row(self) -> dict:
        """The row without its picture."""
        return {name: value for name, value in asdict(self).items() if name != "png"}


COLUMNS = tuple(name for name in LabelledPicture.__dataclass_fields__ if name != "png")
NUMBERS = ("prediction_id", "label", "label_id", "predicted_label")


def export_format(name: str) -> str:
    """The format ``name`` stands for (``folders`` is ``imagefolder``).

    Raises:
        ValueError: not one of :data:`FORMATS`.
    """
    form = ALIASES.get(name, name)
    if form not in FORMATS:
        raise ValueError(f"unknown export format {name!r}: {', '.join(FORMATS)}")
    return form


def since_moment(text: str) -> datetime:
    """An ISO 8601 date or date and time as a moment in UTC: a date is its midnight, a time without offset UTC.

    Raises:
        ValueError: not an ISO date or date and time.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or date and time (2026-01-31, 2026-01-31T12:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def labelled_pictures(
    store: Store, since_label_id: int = 0, corrections_only: bool = False, since: datetime | None = None
) -> list[LabelledPicture]:
    """Every labelled prediction with its current label, by prediction id.

    Args:
        store: the store to read.
        since_label_id: only those whose current label is newer than this label id.
        corrections_only: only the predictions a person corrected (the current label a ``correct``).
        since: only those whose current label was given at this moment or later (see :func:`since_moment`).
    """
    found = [
        LabelledPicture(
            prediction_id=prediction.id,
            label=int(label.label),
            kind=label.kind,
            labelled_at=label.created_at,
            label_id=label.id,
            predicted_label=prediction.predicted_label,
            model_version=prediction.model_version,
            source=prediction.source,
            predicted_at=prediction.created_at,
            png=prediction.png,
        )
        for prediction, label in store.labelled_predictions(since_label_id)
        if (not corrections_only or label.kind == "correct")
        and (since is None or datetime.fromisoformat(label.created_at) >= since)
    ]
    return sorted(found, key=lambda picture: picture.prediction_id)


def csv_text(pictures: Iterable[LabelledPicture]) -> Iterator[str]:
    """The CSV export, a header and one line per label (the PNG in base64), piece by piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*COLUMNS, "png_base64"])
    for picture in pictures:
        writer.writerow([*picture.row().values(), base64.b64encode(picture.png).decode()])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def jsonl_text(pictures: Iterable[LabelledPicture]) -> Iterator[str]:
    """The JSON lines export, one object per label (the PNG in base64)."""
    for picture in pictures:
        yield json.dumps({**picture.row(), "png_base64": base64.b64encode(picture.png).decode()}) + "\n"


def imagefolder_files(pictures: Iterable[LabelledPicture]) -> Iterator[tuple[str, bytes]]:
    """The image folder's files as ``(relative name, content)``: each picture, then ``labels.csv``."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["file_name", *COLUMNS], lineterminator="\n")
    writer.writeheader()
    for picture in pictures:
        name = f"{picture.label}/{picture.prediction_id}.png"
        writer.writerow({"file_name": name, **picture.row()})
        yield name, picture.png
    yield TABLE, table.getvalue().encode()


def write_imagefolder_zip(pictures: Iterable[LabelledPicture], target: IO[bytes]) -> None:
    """Write the image folder as a zip to ``target``: unzipped, it is what ``export --format imagefolder`` writes."""
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in imagefolder_files(pictures):
            member = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            member.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            archive.writestr(member, content)


def parquet_table(pictures: Iterable[LabelledPicture]):
    """The Parquet export as a ``pyarrow.Table``: the CSV's columns, and the picture in ``image`` as ``datasets``
    keeps an ``Image``."""
    import pyarrow as pa

    pictures = list(pictures)
    features = {name: {"dtype": "int64" if name in NUMBERS else "string", "_type": "Value"} for name in COLUMNS}
    features |= {"label": {"names": DIGITS, "_type": "ClassLabel"}, "image": {"_type": "Image"}}
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [*((name, pa.int64() if name in NUMBERS else pa.string()) for name in COLUMNS), ("image", image)],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    columns = {name: [getattr(picture, name) for picture in pictures] for name in COLUMNS}
    columns["image"] = [{"bytes": picture.png, "path": f"{picture.prediction_id}.png"} for picture in pictures]
    return pa.Table.from_pydict(columns, schema=schema)


def write_parquet(pictures: Iterable[LabelledPicture], target: str | Path | IO[bytes]) -> None:
    """Write the Parquet export to a path or a binary file."""
    import pyarrow.parquet as pq

    pq.write_table(parquet_table(pictures), target)


def export_labels(pictures: list[LabelledPicture], path: str | Path, form: str) -> Path:
    """Write ``pictures`` to ``path`` in ``form`` (one of :data:`FORMATS`); returns the path written.

    ``csv``, ``jsonl`` and ``parquet`` write a file; ``imagefolder`` and ``hf`` a folder, which must
    not hold anything yet.
    """
    path, form = Path(path), export_format(form)
    if form in FILE_FORMATS:
        path.parent.mkdir(parents=True, exist_ok=True)
        if form == "parquet":
            write_parquet(pictures, path)
            return path
        text = csv_text(pictures) if form == "csv" else jsonl_text(pictures)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.writelines(text)
        return path
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder: name a new one")
    if form == "imagefolder":
        for name, content in imagefolder_files(pictures):
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(content)
    else:
        _write_dataset(pictures, path)
    return path


def _write_dataset(pictures: list[LabelledPicture], path: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise ImportError("the hf format needs Hugging Face datasets: pip install 'mnist-hitl[hf]'") from None
    features = datasets.Features(
        {
            "image": datasets.Image(),
            **{name: datasets.Value("int64" if name in NUMBERS else "string") for name in COLUMNS},
            "label": datasets.ClassLabel(names=DIGITS),
        }
    )
    columns = {name: [getattr(picture, name) for picture in pictures] for name in COLUMNS}
    images = [{"bytes": picture.png, "path": None} for picture in pictures]
    datasets.Dataset.from_dict({"image": images, **columns}, features=features).save_to_disk(str(path))


# reading an export back ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedLabel:
    """One row of an export read back: where it is, its picture and its label, or why it cannot be taken."""

    path: str
    png: bytes = field(default=b"", repr=False)
    label: int | None = None
    kind: str | None = None  # confirm or correct; None: the export does not say
    error: str | None = None


def is_export(path: Path) -> bool:
    """Whether ``path`` is an export :func:`read_export` reads: a ``.csv``, ``.jsonl`` or ``.parquet`` file,
    or an image folder (a folder, or a zip, with ``labels.csv`` at its top)."""
    if path.is_dir():
        return (path / TABLE).is_file()
    if path.suffix.lower() in (".csv", ".jsonl", ".parquet"):
        return path.is_file()
    if path.suffix.lower() == ".zip" and path.is_file():
        try:
            with zipfile.ZipFile(path) as archive:
                return TABLE in archive.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
    return False


def read_export(path: Path, max_bytes: int) -> Iterator[ExportedLabel]:
    """The rows of an export (see :func:`is_export`), in its order; a row that cannot be read carries its ``error``.

    Args:
        path: the export.
        max_bytes: a picture larger than this is refused.
    """
    try:
        if path.is_dir():
            yield from _imagefolder_rows(path, _folder_reader(path), max_bytes)
        elif path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as archive:
                yield from _imagefolder_rows(path, _zip_reader(archive), max_bytes)
        elif path.suffix.lower() == ".parquet":
            yield from _parquet_rows(path, max_bytes)
        else:
            yield from _text_rows(path, max_bytes)
    except (OSError, ValueError, csv.Error, zipfile.BadZipFile) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        yield ExportedLabel(str(path), error=f"not a readable export: {reason or type(error).__name__}")


def _text_rows(path: Path, max_bytes: int) -> Iterator[ExportedLabel]:
    with open(path, encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            rows = csv.DictReader(handle)
            _require_columns(path, rows.fieldnames or [], "png_base64")
            numbered = ((rows.line_num, row) for row in rows)
        else:
            numbered = ((number, _json_row(line)) for number, line in enumerate(handle, 1) if line.strip())
        for number, row in numbered:
            where = f"{path}:{number}"
            if not isinstance(row, dict):
                yield ExportedLabel(where, error="not a JSON object")
                continue
            try:
                png = base64.b64decode(str(row.get("png_base64", "")), validate=True)
            except (binascii.Error, ValueError):
                yield ExportedLabel(where, error="png_base64 is not base64")
                continue
            yield _checked(where, png, row, max_bytes)


def _json_row(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _parquet_rows(path: Path, max_bytes: int) -> Iterator[ExportedLabel]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    _require_columns(path, table.column_names, "image")
    for number, row in enumerate(table.to_pylist()):
        image = row["image"]
        png = image.get("bytes") if isinstance(image, dict) else image
        yield _checked(f"{path}:{number}", png if isinstance(png, bytes) else b"", row, max_bytes)


def _imagefolder_rows(path: Path, read: Callable[[str, int | None], bytes], max_bytes: int) -> Iterator[ExportedLabel]:
    rows = csv.DictReader(io.StringIO(read(TABLE, None).decode("utf-8")))
    _require_columns(path / TABLE, rows.fieldnames or [], "file_name")
    for row in rows:
        where = f"{path}/{row['file_name']}"
        try:
            png = read(row["file_name"] or "", max_bytes)
        except KeyError:
            yield ExportedLabel(where, error="no such file in the export")
        except _TooLarge as error:
            yield ExportedLabel(where, error=str(error))
        except OSError as error:
            yield ExportedLabel(where, error=f"cannot read it: {error.strerror or error}")
        else:
            yield _checked(where, png, row, max_bytes)


class _TooLarge(Exception):
    def __init__(self, size: int, max_bytes: int) -> None:
        super().__init__(f"the picture is {size:,} bytes, over the limit of {max_bytes:,} bytes")


def _folder_reader(root: Path) -> Callable[[str, int | None], bytes]:
    top = root.resolve()

    def read(name: str, max_bytes: int | None) -> bytes:
        file = (root / name).resolve()
        if not file.is_relative_to(top) or not file.is_file():
            raise KeyError(name)  # nothing outside the export is read
        if max_bytes is not None and (size := file.stat().st_size) > max_bytes:
            raise _TooLarge(size, max_bytes)
        return file.read_bytes()

    return read


def _zip_reader(archive: zipfile.ZipFile) -> Callable[[str, int | None], bytes]:
    def read(name: str, max_bytes: int | None) -> bytes:
        member = archive.getinfo(name)  # KeyError: no such member
        if max_bytes is not None and member.file_size > max_bytes:
            raise _TooLarge(member.file_size, max_bytes)
        return archive.read(member)

    return read


def _require_columns(path: Path, columns: Iterable[str], picture: str) -> None:
    missing = [name for name in ("label", picture) if name not in columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(missing)}")


def _checked(where: str, png: bytes, row: dict, max_bytes: int) -> ExportedLabel:
    """The row's label and kind, checked, beside its picture (checked by the importer, which reads it)."""
    value, kind = row.get("label"), row.get("kind") or None
    try:
        label = None if isinstance(value, bool) else operator.index(int(value) if isinstance(value, str) else value)
    except (TypeError, ValueError):
        label = None
    if label not in range(10):
        return ExportedLabel(where, error=f"label {value!r} is not a digit 0-9")
    if kind not in (None, "confirm", "correct"):
        return ExportedLabel(where, error=f"kind {kind!r} is not confirm or correct")
    if len(png) > max_bytes:
        return ExportedLabel(where, error=str(_TooLarge(len(png), max_bytes)))
    return ExportedLabel(where, png=png, label=label, kind=kind)
