"""The command on a full disk, and its messages: one line saying what is wrong, nothing half-written, no crash."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from mnist_hitl.config import Settings
from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from tests.support.helpers import run_cli
from tests.support.small_disk import check_mounted, start_on_small_disk

# Each command's stdout, stderr and exit status go to $OUT/<name>.{out,err,status}.
FULL_DISK_SCRIPT = """
run() { name=$1; shift; set +e; "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"; echo $? > "$OUT/$name.status"; set -e; }
run first_predict "$CLI" predict "$PICTURE"
rm -rf "$MNIST_HITL_HOME/metrics"
fill_the_disk
run correct_on_full_disk "$CLI" correct 1 7
run predict_on_full_disk "$CLI" predict "$PICTURE"
export MNIST_HITL_DATABASE_URL="sqlite:///$ELSEWHERE"
run predict_elsewhere "$CLI" predict "$PICTURE"
run correct_elsewhere "$CLI" correct 1 7
run backup_onto_full_disk "$CLI" backup "$DISK/copy.sqlite"
ls -a "$DISK" > "$OUT/disk.ls"
unset MNIST_HITL_DATABASE_URL
rm "$DISK/fill"
run history_after "$CLI" history 1
run predict_after "$CLI" predict "$PICTURE"
"""


def outcome(out: Path, name: str) -> tuple[int, str, str]:
    return (
        int((out / f"{name}.status").read_text()),
        (out / f"{name}.out").read_text(),
        (out / f"{name}.err").read_text(),
    )


def test_a_full_disk_is_one_line_and_a_stored_row_exits_0(home_with_model: Settings, tmp_path: Path) -> None:
    out, elsewhere, picture = tmp_path / "out", tmp_path / "elsewhere.sqlite", tmp_path / "digit.png"
    out.mkdir()
    picture.write_bytes(encode_png(load_bundled().x_test[0]))
    env = {**os.environ, "OUT": str(out), "ELSEWHERE": str(elsewhere), "PICTURE": str(picture)}
    script = start_on_small_disk(
        FULL_DISK_SCRIPT, home_with_model.models_dir, tmp_path, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    printed = script.communicate(timeout=300)[0].decode()
    check_mounted(script, printed)
    assert script.returncode == 0, printed
    assert outcome(out, "first_predict")[0] == 0

    # The store on the full disk: one line saying the disk is full, exit 1, nothing stored.
    for name in ("correct_on_full_disk", "predict_on_full_disk"):
        status, stdout, stderr = outcome(out, name)
        assert (status, stdout) == (1, ""), (name, stderr)
        assert len(stderr.splitlines()) == 1 and "full" in stderr and "error:" in stderr, (name, stderr)
    assert outcome(out, "history_after")[:2] == (0, ""), "a label was half-written on the full disk"
    assert json.loads(outcome(out, "predict_after")[1])["prediction_id"] == 2, (
        "a prediction was stored on the full disk"
    )

    # Only the metrics on the full disk: the rows are stored, once, and the commands exit 0, saying nothing else.
    for name in ("predict_elsewhere", "correct_elsewhere"):
        status, stdout, stderr = outcome(out, name)
        assert (status, stderr) == (0, ""), (name, stderr)
        assert json.loads(stdout)["prediction_id"] == 1
    with sqlite3.connect(elsewhere) as store:
        assert store.execute("SELECT prediction_id, label, kind FROM labels").fetchall() == [(1, 7, "correct")]
        assert store.execute("SELECT COUNT(*) FROM predictions").fetchone() == (1,)

    # A backup onto the full disk says so, and leaves no part of itself behind.
    status, _, stderr = outcome(out, "backup_onto_full_disk")
    assert status == 1 and len(stderr.splitlines()) == 1 and "is full" in stderr, stderr
    assert "folder exists" not in stderr
    assert not [name for name in (out / "disk.ls").read_text().split() if "copy" in name]


def test_a_model_error_is_one_line(home: Settings, tmp_path: Path) -> None:
    picture = tmp_path / "digit.png"
    picture.write_bytes(encode_png(load_bundled().x_test[0]))
    home.models_dir.mkdir(parents=True)
    (home.models_dir / "latest.json").write_text('{"version": "20990101-000000-000", "tflite": "gone.tflite"}')
    result = run_cli(home, "predict", str(picture), check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error:"), result.stderr
    assert "missing" in result.stderr


def test_a_command_prints_its_answer_and_nothing_of_the_model_runtime(
    home_with_model: Settings, tmp_path: Path
) -> None:
    picture = tmp_path / "digit.png"
    picture.write_bytes(encode_png(load_bundled().x_test[0]))
    result = run_cli(home_with_model, "predict", str(picture))
    assert result.stderr == "", result.stderr
    assert json.loads(result.stdout)["predicted_label"] == load_bundled().y_test[0]


def test_a_lost_pointer_with_models_on_disk_says_so(home_with_model: Settings, tmp_path: Path) -> None:
    picture = tmp_path / "digit.png"
    picture.write_bytes(encode_png(load_bundled().x_test[0]))
    (home_with_model.models_dir / "latest.json").unlink()
    result = run_cli(home_with_model, "predict", str(picture), check=False)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "latest.json" in result.stderr and "is missing" in result.stderr and "1 model version is in" in result.stderr
    assert "to train the first one" not in result.stderr
