"""The mnist-hitl command, run as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png, render_strokes
from mnist_hitl.store import Store
from tests.support.helpers import run_cli


@pytest.fixture
def pictures(tmp_path):
    data = load_bundled()
    small = tmp_path / "mnist_digit.png"
    small.write_bytes(encode_png(data.x_test[0]))
    big = tmp_path / "drawing.png"
    big.write_bytes(encode_png(255 - render_strokes([[(140, 30), (140, 250)]])))  # a "1", ink on paper
    return {"small": (small, int(data.y_test[0])), "big": (big, 1)}


def test_predict_prints_a_json_line_per_image_and_stores_each(home_with_model, pictures):
    small, big = pictures["small"], pictures["big"]
    printed = run_cli(home_with_model, "predict", str(small[0]), str(big[0])).stdout
    lines = [json.loads(line) for line in printed.splitlines()]
    assert [line["predicted_label"] for line in lines] == [small[1], big[1]]
    for line in lines:
        assert set(line) >= {"prediction_id", "predicted_label", "probabilities", "model_version"}
        assert len(line["probabilities"]) == 10 and abs(sum(line["probabilities"]) - 1) < 1e-3
    with Store(home_with_model.db_path) as store:
        stored = store.get_prediction(lines[1]["prediction_id"])
        assert stored.source == "cli" and stored.model_version == lines[1]["model_version"]
        assert stored.png.startswith(b"\x89PNG")


def test_correct_then_status_counts_it(home_with_model, pictures):
    (line,) = [json.loads(run_cli(home_with_model, "predict", str(pictures["small"][0])).stdout)]
    run_cli(home_with_model, "correct", str(line["prediction_id"]), "3")
    run_cli(home_with_model, "confirm", str(line["prediction_id"]))
    status = json.loads(run_cli(home_with_model, "status").stdout)
    assert status["model_version"] == line["model_version"]
    assert (status["predictions"], status["labels"], status["corrections"], status["confirmations"]) == (1, 2, 1, 1)


def test_bad_input_is_refused_with_a_clear_message_and_nothing_stored(home_with_model, pictures, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode_png(np.zeros((280, 280), np.uint8)))
    result = run_cli(home_with_model, "predict", str(broken), str(blank), check=False)
    assert result.returncode == 1
    assert "not a readable image" in result.stderr and "empty" in result.stderr
    result = run_cli(home_with_model, "correct", "12345", "3", check=False)
    assert result.returncode == 1 and "no prediction with id 12345" in result.stderr
    (line,) = [json.loads(run_cli(home_with_model, "predict", str(pictures["small"][0])).stdout)]
    result = run_cli(home_with_model, "correct", str(line["prediction_id"]), "10", check=False)
    assert result.returncode == 1 and "outside 0-9" in result.stderr
    status = json.loads(run_cli(home_with_model, "status").stdout)
    assert (status["predictions"], status["labels"]) == (1, 0)


def test_predict_without_a_model_says_how_to_get_one(home, pictures):
    result = run_cli(home, "predict", str(pictures["small"][0]), check=False)
    assert result.returncode == 1 and "mnist-hitl init" in result.stderr


def test_the_predict_path_never_imports_tensorflow(home_with_model, pictures):
    # Python lists every module it imports, one "import time: ... | name" line each.
    result = run_cli(home_with_model, "predict", str(pictures["small"][0]), extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "mnist_hitl.model.predictor" in imported
    assert not [name for name in imported if name.split(".")[0] == "tensorflow"]


def test_init_does_not_retrain_when_a_model_is_deployed(home_with_model):
    before = sorted(p.name for p in home_with_model.models_dir.iterdir())
    result = json.loads(run_cli(home_with_model, "init").stdout)
    assert result["trained"] is False
    assert sorted(p.name for p in home_with_model.models_dir.iterdir()) == before


@pytest.mark.model
def test_init_trains_and_deploys_the_first_model(home):
    result = json.loads(run_cli(home, "init", "--epochs", "1").stdout)
    assert result["trained"] is True and result["holdout_accuracy"] > 0.8
    status = json.loads(run_cli(home, "status").stdout)
    assert status["model_version"] == result["model_version"]
    with Store(home.db_path) as store:
        assert [v["status"] for v in store.model_versions()] == ["deployed"]
