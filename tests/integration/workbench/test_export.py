"""Labels leave in standard formats (CSV, JSON lines, image folders, a Hugging Face data set) and come back whole."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.workbench import Workbench
from tests.support.helpers import import_digits, run_cli

COLUMNS = [
    *("prediction_id", "label", "kind", "labelled_at", "label_id"),
    *("predicted_label", "model_version", "source", "predicted_at"),
]


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.fixture
def labelled(home_with_model: Settings) -> dict[int, tuple[int, str, bytes]]:
    """Six stored drawings, labelled, relabelled and undone as people do; what an export must hold, by id."""
    ids = import_digits(home_with_model, 6)
    with Workbench(home_with_model, source="cli") as bench:
        predicted = {pid: bench.prediction(pid).predicted_label for pid in ids}
        bench.label(ids[0], predicted[ids[0]], "confirm")
        bench.label(ids[1], 3, "correct")
        bench.label(ids[2], 5, "correct")
        bench.undo(ids[2])  # undone: not exported
        bench.label(ids[3], 1, "correct")
        bench.label(ids[3], predicted[ids[3]], "confirm")  # the latest label counts
        bench.label(ids[5], 8, "correct")
        bench.label(ids[5], 9, "correct")
        expected = {ids[0]: (predicted[ids[0]], "confirm"), ids[1]: (3, "correct")}
        expected |= {ids[3]: (predicted[ids[3]], "confirm"), ids[5]: (9, "correct")}
        return {pid: (*expected[pid], bench.prediction(pid).png) for pid in expected}


def check_rows(rows: list[dict], expected: dict[int, tuple[int, str, bytes]]) -> None:
    assert [int(row["prediction_id"]) for row in rows] == sorted(expected)  # every label once, in id order
    for row in rows:
        label, kind, png = expected[int(row["prediction_id"])]
        assert (int(row["label"]), row["kind"]) == (label, kind)
        assert row["model_version"] and row["labelled_at"] and row["source"] == "import"
        picture = pixels(base64.b64decode(row["png_base64"])) if "png_base64" in row else row["picture"]
        assert picture.shape == (28, 28) and (picture == pixels(png)).all()


def test_csv_and_json_lines_round_trip(home_with_model: Settings, labelled, tmp_path: Path) -> None:
    for form in ("csv", "jsonl"):
        path = tmp_path / f"labels.{form}"
        out = run_cli(home_with_model, "export", str(path), "--format", form, in_process=True)
        assert json.loads(out.stdout) == {"export": str(path), "format": form, "labels": 4}
        text = path.read_text()
        rows = list(csv.DictReader(io.StringIO(text))) if form == "csv" else [json.loads(x) for x in text.splitlines()]
        assert list(rows[0]) == [*COLUMNS, "png_base64"]
        check_rows(rows, labelled)
    corrections = tmp_path / "corrections.jsonl"
    run_cli(home_with_model, "export", str(corrections), "--format", "jsonl", "--corrections-only", in_process=True)
    assert [json.loads(line)["kind"] for line in corrections.read_text().splitlines()] == ["correct", "correct"]


def test_image_folders_load_with_datasets_and_import_back(home_with_model: Settings, labelled, tmp_path) -> None:
    folder = tmp_path / "folders"
    run_cli(home_with_model, "export", str(folder), "--format", "folders", in_process=True)
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*.png")) == sorted(
        f"{label}/{pid}.png" for pid, (label, _, _) in labelled.items()
    )
    table = list(csv.DictReader((folder / "labels.csv").open()))
    assert [row["file_name"] for row in table] == [f"{labelled[pid][0]}/{pid}.png" for pid in sorted(labelled)]

    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(tmp_path / "c"))
    names = loaded.features["label"].names
    read = sorted((names[row["label"]], np.asarray(row["image"]).tobytes()) for row in loaded)
    assert read == sorted((str(label), pixels(png).tobytes()) for label, _, png in labelled.values())

    fresh = home_with_model.replace(home=tmp_path / "fresh")
    shutil.copytree(home_with_model.models_dir, fresh.models_dir)
    with Workbench(fresh, source="cli") as bench:
        outcomes = list(bench.import_pictures([folder]))
        stored = [bench.prediction(outcome["prediction_id"]).png for outcome in outcomes]
    assert sorted(pixels(png).tobytes() for png in stored) == sorted(pixels(p).tobytes() for *_, p in labelled.values())


def test_a_hugging_face_dataset_with_an_image_and_a_class_label(home_with_model: Settings, labelled, tmp_path) -> None:
    path = tmp_path / "hf"
    run_cli(home_with_model, "export", str(path), "--format", "hf", in_process=True)
    loaded = datasets.load_from_disk(str(path))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded.features["label"] == datasets.ClassLabel(names=[str(digit) for digit in range(10)])
    rows = [{**row, "picture": np.asarray(row["image"])} for row in loaded]
    check_rows(rows, labelled)


def test_bad_requests_are_refused_in_one_line_and_write_nothing(home_with_model: Settings, labelled, tmp_path) -> None:
    existing = tmp_path / "labels.csv"
    existing.write_text("mine\n")
    full = tmp_path / "full"
    (full / "keep.txt").parent.mkdir()
    (full / "keep.txt").write_text("mine")
    for args, status, message in (
        ((str(tmp_path / "x"), "--format", "xml"), 2, "not one of csv, jsonl, folders, hf"),
        ((str(existing),), 1, "exists"),
        ((str(full), "--format", "folders"), 1, "not an empty folder"),
        ((str(full), "--format", "hf"), 1, "not an empty folder"),
    ):
        out = run_cli(home_with_model, "export", *args, check=False, in_process=True)
        assert out.returncode == status and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, args
    assert existing.read_text() == "mine\n" and [path.name for path in full.iterdir()] == ["keep.txt"]


def test_the_api_streams_the_same_export(home_with_model: Settings, labelled, tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    run_cli(home_with_model, "export", str(path), "--format", "jsonl", in_process=True)
    with TestClient(create_app(home_with_model), base_url="http://127.0.0.1") as client:
        answer = client.get("/export", params={"format": "jsonl"})
        assert answer.status_code == 200 and answer.text == path.read_text()
        table = client.get("/export")
        assert table.headers["content-type"].startswith("text/csv")
        check_rows(list(csv.DictReader(io.StringIO(table.text))), labelled)
        assert client.get("/export", params={"format": "xml"}).status_code == 422
