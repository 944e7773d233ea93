"""Importing pictures into the pool: files, folders, zips; the same picture stored once; bad files skipped."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import decode_image, encode_png
from mnist_hitl.store import Store
from mnist_hitl.workbench import Workbench
from tests.support.helpers import run_cli, start_cli


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_bundled().x_test


def save(path: Path, digit: np.ndarray, scale: int = 1, kind: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.kron(digit, np.ones((scale, scale), dtype=np.uint8))).save(path, kind)
    return path


def imported_rows(settings) -> list[tuple]:
    with sqlite3.connect(settings.db_path) as connection:
        return connection.execute(
            "SELECT id, png, content_hash, source, probabilities FROM predictions ORDER BY id"
        ).fetchall()


def assert_whole(rows: list[tuple]) -> None:
    """Every stored import is a whole picture, with its hash, 10 probabilities, and no label."""
    for _, png, picture_hash, source, probabilities in rows:
        assert source == "import" and decode_image(png).shape == (28, 28)
        assert picture_hash == hashlib.sha256(png).hexdigest() and len(json.loads(probabilities)) == 10


def test_a_folder_a_zip_and_files_are_imported_unlabelled(home_with_model, digits, tmp_path):
    folder = tmp_path / "folder"
    save(folder / "a.png", digits[0], scale=10)
    save(folder / "deeper" / "b.JPG", digits[1], scale=4, kind="JPEG")
    save(folder / ".hidden.png", digits[2])
    (folder / "notes.txt").write_text("not a picture, and not in a picture's name")
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("inside/c.png", encode_png(digits[3]))
        zipped.writestr("__MACOSX/inside/._c.png", b"resource fork")
        zipped.writestr("readme.md", "skipped")
    single = save(tmp_path / "d.png", digits[4])
    with Workbench(home_with_model) as bench:
        outcomes = list(bench.import_pictures([folder, archive, single]))
    assert [Path(o["path"]).name for o in outcomes] == ["a.png", "b.JPG", "c.png", "d.png"]
    assert outcomes[2]["path"] == f"{archive}/inside/c.png"
    assert all(isinstance(o["prediction_id"], int) for o in outcomes)
    assert [o["predicted_label"] for o in outcomes] == [int(d) for d in load_bundled().y_test[[0, 1, 3, 4]]]
    rows = imported_rows(home_with_model)
    assert [row[0] for row in rows] == [o["prediction_id"] for o in outcomes]
    assert_whole(rows)
    with Store(home_with_model.db_path) as store:
        assert store.labels() == [] and store.labelled_predictions() == []


def test_the_same_picture_twice_is_stored_once(home_with_model, digits, tmp_path):
    first = save(tmp_path / "one.png", digits[0])
    copy = tmp_path / "copy.png"
    copy.write_bytes(first.read_bytes())
    other_file_same_picture = tmp_path / "again.png"  # other bytes (a text chunk), the same 28x28
    Image.open(first).save(other_file_same_picture, pnginfo=_comment("another file"))
    assert other_file_same_picture.read_bytes() != first.read_bytes()
    with Workbench(home_with_model) as bench:
        outcomes = list(bench.import_pictures([first, copy, other_file_same_picture]))
        again = list(bench.import_pictures([first]))
        stored = outcomes[0]["prediction_id"]
        assert [o.get("duplicate_of") for o in outcomes[1:] + again] == [stored] * 3
        bench.predict_file(first)  # a drawing predicted in the app is not an import: it may repeat one
    assert [row[3] for row in imported_rows(home_with_model)] == ["import", "app"]


def test_unreadable_files_are_skipped_with_the_reason_and_nothing_of_them_is_stored(home_with_model, digits, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    blank = save(tmp_path / "blank.png", np.zeros((28, 28), np.uint8))
    archive = tmp_path / "damaged.zip"
    archive.write_bytes(b"PK\x03\x04 not a zip")
    good = save(tmp_path / "good.png", digits[5])
    with Workbench(home_with_model) as bench:
        outcomes = list(bench.import_pictures([broken, blank, tmp_path / "missing.png", archive, good]))
    errors = [o.get("error", "") for o in outcomes]
    assert "not a readable image" in errors[0] and "empty" in errors[1] and "no such file" in errors[2]
    assert "not a readable zip" in errors[3] and "prediction_id" in outcomes[4]
    assert [row[0] for row in imported_rows(home_with_model)] == [outcomes[4]["prediction_id"]]


def test_the_cli_prints_a_line_per_picture_counts_and_a_progress_bar(home_with_model, digits, tmp_path):
    for i in range(60):
        save(tmp_path / "many" / f"{i:02d}.png", digits[i])
    (tmp_path / "many" / "zz.png").write_bytes(b"junk")
    done = run_cli(home_with_model, "import", str(tmp_path / "many"), str(tmp_path / "many" / "00.png"), check=False)
    assert done.returncode == 1  # a picture was refused
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 62 and all(set(line) & {"prediction_id", "duplicate_of", "error"} for line in lines)
    assert lines[-1]["duplicate_of"] == lines[0]["prediction_id"]
    summary = json.loads(next(line for line in done.stderr.splitlines() if line.startswith("{")))
    assert summary == {"imported": 60, "duplicates": 1, "refused": 1, "labelled": 0}
    assert "62/62" in done.stderr  # tqdm's bar, more than 50 pictures
    small = run_cli(home_with_model, "import", str(tmp_path / "many" / "01.png"))
    assert "duplicate_of" in small.stdout and "%|" not in small.stderr
    no_model = run_cli(
        {**os.environ, "MNIST_HITL_HOME": str(tmp_path / "empty")},
        "import",
        str(tmp_path / "many" / "02.png"),
        check=False,
    )
    assert no_model.returncode == 1 and "mnist-hitl init" in no_model.stderr and "Traceback" not in no_model.stderr


def test_an_import_killed_midway_leaves_only_whole_pictures(home_with_model, digits, tmp_path):
    folder = tmp_path / "pile"
    for i in range(400):
        save(folder / f"{i:03d}.png", digits[i], scale=8)
    process = start_cli(
        home_with_model, "import", str(folder), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    printed = [json.loads(process.stdout.readline()) for _ in range(40)]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.stdout.close()
    rows = imported_rows(home_with_model)
    assert 40 <= len(rows) < 400 and [row[0] for row in rows[:40]] == [p["prediction_id"] for p in printed]
    assert_whole(rows)
    outcomes = [json.loads(line) for line in run_cli(home_with_model, "import", str(folder)).stdout.splitlines()]
    assert sum("duplicate_of" in o for o in outcomes) == len(rows)  # the second run only adds what is missing
    assert len(imported_rows(home_with_model)) == 400


def _comment(text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", text)
    return info
