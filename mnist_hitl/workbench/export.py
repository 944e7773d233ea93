"""Labels leave in standard formats: CSV, JSON lines, image folders, a Hugging Face data set.

An export holds every labelled drawing once, with its current label (the latest; an undone
label leaves its drawing out), in the order of prediction ids, so the same store gives the
same export. Each row carries the 28x28 picture the model saw (a PNG), what it predicted, the
model version, the label's kind and time. The formats, for the tools people take labels to:

- ``csv`` and ``jsonl``: one file, a row or a line per label, the PNG in base64 (``png_base64``);
- ``folders``: ``<digit>/<prediction_id>.png`` and the table beside them in ``labels.csv``
  (``file_name`` instead of the picture), the layout Hugging Face ``datasets`` loads as
  ``load_dataset("imagefolder", data_dir=...)``, torchvision as ``ImageFolder``, Keras as
  ``image_dataset_from_directory``;
- ``hf``: a ``datasets.Dataset`` saved with ``save_to_disk`` (``datasets.load_from_disk``), the
  picture an ``Image`` feature, the label a ``ClassLabel`` of the ten digits.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_hitl.store import Store

FORMATS = ("csv", "jsonl", "folders", "hf")


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


def labelled_pictures(store: Store, since_label_id: int = 0, corrections_only: bool = False) -> list[LabelledPicture]:
    """Every labelled prediction with its current label, by prediction id.

    Args:
        store: the store to read.
        since_label_id: only those whose current label is newer than this label id.
        corrections_only: only the predictions a person corrected (the current label a ``correct``).
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
        if not corrections_only or label.kind == "correct"
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


def export_labels(pictures: list[LabelledPicture], path: str | Path, form: str) -> Path:
    """Write ``pictures`` to ``path`` in ``form`` (one of :data:`FORMATS`); returns the path written.

    ``csv`` and ``jsonl`` write a file; ``folders`` and ``hf`` a folder, which must not hold anything yet.
    """
    path = Path(path)
    if form not in FORMATS:
        raise ValueError(f"unknown export format {form!r}: {', '.join(FORMATS)}")
    if form in ("csv", "jsonl"):
        path.parent.mkdir(parents=True, exist_ok=True)
        text = csv_text(pictures) if form == "csv" else jsonl_text(pictures)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.writelines(text)
        return path
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder: name a new one")
    if form == "folders":
        _write_folders(pictures, path)
    else:
        _write_dataset(pictures, path)
    return path


def _write_folders(pictures: list[LabelledPicture], path: Path) -> None:
    rows = []
    for picture in pictures:
        name = f"{picture.label}/{picture.prediction_id}.png"
        (path / str(picture.label)).mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(picture.png)
        rows.append({"file_name": name, **picture.row()})
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "labels.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file_name", *COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_dataset(pictures: list[LabelledPicture], path: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise ImportError("the hf format needs Hugging Face datasets: pip install 'mnist-hitl[hf]'") from None
    numbers = {"prediction_id", "label_id", "predicted_label"}
    features = datasets.Features(
        {
            "image": datasets.Image(),
            **{name: datasets.Value("int64" if name in numbers else "string") for name in COLUMNS},
            "label": datasets.ClassLabel(names=[str(digit) for digit in range(10)]),
        }
    )
    columns = {name: [getattr(picture, name) for picture in pictures] for name in COLUMNS}
    images = [{"bytes": picture.png, "path": None} for picture in pictures]
    datasets.Dataset.from_dict({"image": images, **columns}, features=features).save_to_disk(str(path))
