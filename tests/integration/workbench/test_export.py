"""Labels leave in standard formats (CSV, JSON lines, an image folder, Parquet, a Hugging Face data set) and come back
whole: into a fresh home, the same pictures byte for byte, with the same labels."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import datasets
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_hitl.api import create_app
from mnist_hitl.config import Settings
from mnist_hitl.store import open_store
from mnist_hitl.workbench import Workbench
from mnist_hitl.workbench.export import jsonl_text, labelled_pictures
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
        ((str(tmp_path / "x"), "--format", "xml"), 2, "not one of csv, jsonl, imagefolder, parquet, hf"),
        ((str(tmp_path / "x"), "--since", "last tuesday"), 2, "--since 'last tuesday' is not an ISO date"),
        ((str(tmp_path / "x"), "--since", "2026-02-30"), 2, "is not an ISO date"),
        ((str(existing),), 1, "exists"),
        ((str(existing), "--format", "parquet"), 1, "exists"),
        ((str(full), "--format", "imagefolder"), 1, "not an empty folder"),
        ((str(full), "--format", "folders"), 1, "not an empty folder"),  # the former name still works
        ((str(full), "--format", "hf"), 1, "not an empty folder"),
    ):
        out = run_cli(home_with_model, "export", *args, check=False, in_process=True)
        assert out.returncode == status and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, args
    assert existing.read_text() == "mine\n" and [path.name for path in full.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "x").exists()


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
        refused = client.get("/export", params={"since": "yesterday"})
        assert refused.status_code == 422 and "since" in str(refused.json()["detail"])
        assert client.get("/export", params={"since": "0.5"}).status_code == 422  # not read as seconds

        zipped = client.get("/export", params={"format": "imagefolder"})
        assert zipped.headers["content-type"] == "application/zip"
        assert zipped.headers["content-disposition"] == 'attachment; filename="mnist-hitl-labels.zip"'
        assert client.get("/export", params={"format": "imagefolder"}).content == zipped.content  # deterministic
        parquet = client.get("/export", params={"format": "parquet"})
        assert parquet.headers["content-disposition"] == 'attachment; filename="mnist-hitl-labels.parquet"'
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(io.BytesIO(zipped.content)).extractall(folder)
    run_cli(home_with_model, "export", str(tmp_path / "cli"), "--format", "imagefolder", in_process=True)
    files = sorted(str(file.relative_to(folder)) for file in folder.rglob("*") if file.is_file())
    assert files == sorted(str(file.relative_to(tmp_path / "cli")) for file in (tmp_path / "cli").rglob("*.*"))
    assert all((folder / name).read_bytes() == (tmp_path / "cli" / name).read_bytes() for name in files)
    check_loads_as_imagefolder(folder, labelled, tmp_path / "cache")
    (tmp_path / "api.parquet").write_bytes(parquet.content)
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "api.parquet"), cache_dir=str(tmp_path / "c"))
    check_rows([{**row, "picture": np.asarray(row["image"])} for row in loaded["train"]], labelled)


def test_an_image_folder_loads_with_datasets(home_with_model: Settings, labelled, tmp_path: Path) -> None:
    folder = tmp_path / "imagefolder"
    out = run_cli(home_with_model, "export", str(folder), "--format", "imagefolder", in_process=True)
    assert json.loads(out.stdout) == {"export": str(folder), "format": "imagefolder", "labels": 4}
    table = list(csv.DictReader((folder / "labels.csv").open()))
    assert [row["file_name"] for row in table] == [f"{labelled[pid][0]}/{pid}.png" for pid in sorted(labelled)]
    assert all((folder / row["file_name"]).read_bytes() == labelled[int(row["prediction_id"])][2] for row in table)
    check_loads_as_imagefolder(folder, labelled, tmp_path / "cache")


def check_loads_as_imagefolder(folder: Path, expected: dict, cache: Path) -> None:
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(cache))
    names = loaded.features["label"].names
    read = sorted((int(names[row["label"]]), np.asarray(row["image"]).tobytes()) for row in loaded)
    assert read == sorted((label, pixels(png).tobytes()) for label, _, png in expected.values())


def test_parquet_loads_with_datasets_as_images_and_class_labels(home_with_model, labelled, tmp_path) -> None:
    path = tmp_path / "labels.parquet"
    run_cli(home_with_model, "export", str(path), "--format", "parquet", in_process=True)
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "c"))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded.features["label"] == datasets.ClassLabel(names=[str(digit) for digit in range(10)])
    assert list(loaded.column_names) == [*COLUMNS, "image"]
    check_rows([{**row, "picture": np.asarray(row["image"])} for row in loaded], labelled)
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    assert [row["image"]["bytes"] for row in raw] == [labelled[pid][2] for pid in sorted(labelled)]


def stored_labels(settings: Settings) -> list[tuple[bytes, int, str]]:
    """What a home holds: each labelled picture's PNG, current label and kind, by prediction id."""
    with open_store(settings) as store:
        return [(picture.png, picture.label, picture.kind) for picture in labelled_pictures(store)]


def fresh_home(home: Settings, name: str) -> Settings:
    """An empty home beside ``home``, with the same deployed model."""
    fresh = home.replace(home=home.home.parent / name)
    shutil.copytree(home.models_dir, fresh.models_dir)
    return fresh


@pytest.mark.parametrize("form", ["csv", "jsonl", "parquet", "imagefolder", "api-zip"])
def test_an_export_imported_into_a_fresh_home_gives_back_the_same_pictures_and_labels(
    home_with_model: Settings, labelled, tmp_path: Path, form: str
) -> None:
    expected = [(png, label, kind) for pid, (label, kind, png) in sorted(labelled.items())]
    if form == "api-zip":
        path = tmp_path / "labels.zip"
        with TestClient(create_app(home_with_model), base_url="http://127.0.0.1") as client:
            path.write_bytes(client.get("/export", params={"format": "imagefolder"}).content)
    else:
        path = tmp_path / ("labels" if form == "imagefolder" else f"labels.{form}")
        run_cli(home_with_model, "export", str(path), "--format", form, in_process=True)

    fresh = fresh_home(home_with_model, f"fresh-{form}")
    out = run_cli(fresh, "import", str(path), "--reviewer", "ada", in_process=True)
    assert json.loads(out.stderr.splitlines()[-1]) == {"imported": 4, "duplicates": 0, "refused": 0, "labelled": 4}
    assert stored_labels(fresh) == expected  # byte for byte, in the export's order, kinds kept
    with open_store(fresh) as store:
        assert {label.reviewer for label in store.labels()} == {"ada"}

    again = run_cli(fresh, "import", str(path), in_process=True)  # nothing twice
    assert json.loads(again.stderr.splitlines()[-1]) == {"imported": 0, "duplicates": 4, "refused": 0, "labelled": 0}
    with open_store(fresh) as store:
        assert stored_labels(fresh) == expected and len(store.labels()) == 4


def test_an_import_labels_again_only_what_changed_and_refuses_bad_rows(home_with_model, labelled, tmp_path) -> None:
    path = tmp_path / "labels.jsonl"
    run_cli(home_with_model, "export", str(path), "--format", "jsonl", in_process=True)
    fresh = fresh_home(home_with_model, "fresh")
    run_cli(fresh, "import", str(path), in_process=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["label"] = (rows[0]["label"] + 1) % 10  # relabelled at home since: the newer label comes over
    changed = tmp_path / "changed.jsonl"
    broken = [{**rows[1], "label": 12}, {**rows[2], "kind": "undo"}, {**rows[3], "png_base64": "aGVsbG8="}]
    changed.write_text("".join(json.dumps(row) + "\n" for row in [rows[0], *broken]) + "not json\n")

    out = run_cli(fresh, "import", str(changed), check=False, in_process=True)
    assert out.returncode == 1
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert answers[0]["label"] == rows[0]["label"] and answers[0]["kind"] == "correct" and answers[0]["label_id"]
    assert [answer["error"] for answer in answers[1:]] == [
        "label 12 is not a digit 0-9",
        "kind 'undo' is not confirm or correct",
        "not a 28x28 grey PNG, the picture an export holds",
        "not a JSON object",
    ]
    assert json.loads(out.stderr.splitlines()[-1]) == {"imported": 0, "duplicates": 1, "refused": 4, "labelled": 1}
    assert [label for _, label, _ in stored_labels(fresh)] == [rows[0]["label"], *(row["label"] for row in rows[1:])]


def test_filters_since_a_time_or_a_label_id_and_corrections_only(home_with_model, labelled, tmp_path) -> None:
    def exported(*options: str) -> list[int]:
        path = tmp_path / "filtered.jsonl"
        run_cli(home_with_model, "export", str(path), "--format", "jsonl", "--force", *options, in_process=True)
        return [json.loads(line)["prediction_id"] for line in path.read_text().splitlines()]

    everything = [json.loads(line) for line in "".join(jsonl_text(labelled_rows(home_with_model))).splitlines()]
    by_label = sorted(everything, key=lambda row: row["label_id"])  # the undone drawing is in none of them
    assert sorted(row["prediction_id"] for row in everything) == sorted(labelled)
    third = by_label[2]
    newer = sorted(row["prediction_id"] for row in by_label[2:])
    assert exported("--since", third["labelled_at"]) == newer  # at that moment or later
    moment = datetime.fromisoformat(third["labelled_at"])
    assert exported("--since", (moment + timedelta(hours=2)).replace(tzinfo=None).isoformat() + "+02:00") == newer
    first_day = datetime.fromisoformat(by_label[0]["labelled_at"]).date()
    assert exported("--since", first_day.isoformat()) == sorted(labelled)  # a date: from its midnight, UTC
    assert exported("--since", (first_day + timedelta(days=1)).isoformat()) == []
    assert exported("--since-label-id", str(by_label[1]["label_id"])) == newer
    corrections = sorted(pid for pid, (_, kind, _) in labelled.items() if kind == "correct")
    assert exported("--corrections-only") == corrections
    assert exported("--corrections-only", "--since", third["labelled_at"]) == [
        pid for pid in corrections if pid in newer
    ]
    with TestClient(create_app(home_with_model), base_url="http://127.0.0.1") as client:
        answer = client.get("/export", params={"format": "jsonl", "since": third["labelled_at"]})
        assert [json.loads(line)["prediction_id"] for line in answer.text.splitlines()] == newer


def labelled_rows(settings: Settings):
    with open_store(settings) as store:
        return labelled_pictures(store)
