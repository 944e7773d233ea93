"""Is the loop helping? ``mnist_hitl.learning.history`` and ``notebooks/history.ipynb`` on a seeded store.

The store holds three versions, as cycles leave them: the first model, a rejected challenger and
a promoted one, with the users' drawings labelled while the first and while the promoted one
served. No training: the versions are the session's models under new version names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from loop_support import draw_and_label, install_models

from mnist_hitl.learning import history
from mnist_hitl.learning.labels import in_users_holdout
from mnist_hitl.predictor import deployed_model
from mnist_hitl.store import Store

pytestmark = pytest.mark.slow

REJECTED, PROMOTED = "20990101-000000-000", "20990102-000000-000"
REJECTION = "users' held-out slice (10 drawings) 0.8000 vs 0.8000 (+0.00 points): not better"


def add_version(settings, source_models: Path, version: str, promote: bool, reasons: list[str]) -> None:
    """Another model's files under a new version, deployed or rejected as a cycle records it."""
    from mnist_hitl.learning.deployment import deploy, reject
    from mnist_hitl.learning.model import SavedModel

    pointer = json.loads((source_models / "latest.json").read_text())
    saved = SavedModel(
        version, settings.models_dir / f"model_{version}.keras", settings.models_dir / f"model_{version}.tflite"
    )
    shutil.copyfile(source_models / pointer["keras"], saved.keras_path)
    shutil.copyfile(source_models / pointer["tflite"], saved.tflite_path)
    record = {
        "cycle_id": f"cycle-{version}",
        "reasons": reasons,
        "verdict": "promote" if promote else "reject",
        "comparison": {"challenger": {"users_heldout": 0.9}, "champion": {"users_heldout": 0.8}},
    }
    if promote:
        deploy(settings, saved, pointer["holdout_accuracy"], record, reasons=reasons)
    else:
        reject(settings, saved, pointer["holdout_accuracy"], record, None, reasons)


@pytest.fixture
def home_with_history(home, quick_models, trained_models):
    install_models(home, quick_models)  # the first model, two epochs
    draw_and_label(home, 40, seed=41)
    add_version(home, quick_models, REJECTED, promote=False, reasons=[REJECTION])
    add_version(home, trained_models, PROMOTED, promote=True, reasons=["better on the users' held-out slice"])
    draw_and_label(home, 30, seed=42, offset=40)
    return home


def test_every_version_is_scored_on_the_users_drawings(home_with_history):
    settings = home_with_history
    past = history.load_history(settings)
    versions = past.versions.set_index("version")
    first = versions.index[0]
    assert list(versions["what"]) == ["first model", "rejected", "promoted"]
    assert list(versions["compared_with"]) == [None, first, first]
    assert list(versions["deployed_now"]) == [False, False, True]
    assert list(versions["live_n"]) == [40, 0, 30]

    with Store(settings.db_path) as store:
        pairs = store.labelled_predictions(0)
    made_by = np.array([p.model_version for p, _ in pairs])
    stored = np.array([p.predicted_label for p, _ in pairs])
    truth = np.array([label.label for _, label in pairs])
    for version in (first, PROMOTED):  # each export reads its own users' drawings as it did live
        mine = made_by == version
        assert (past.predicted[version].to_numpy()[mine] == stored[mine]).all(), version
        assert versions.loc[version, "live_accuracy"] == pytest.approx((stored[mine] == truth[mine]).mean())
    assert versions.loc[REJECTED, "all_accuracy"] == versions.loc[first, "all_accuracy"]  # the same weights
    heldout = np.array([in_users_holdout(p.id, 0.25) for p, _ in pairs])
    assert versions.loc[PROMOTED, "heldout_accuracy"] == pytest.approx(
        (past.predicted[PROMOTED].to_numpy()[heldout] == truth[heldout]).mean()
    )

    per_day = history.labels_per_day(past)
    assert per_day["total"].sum() == 70 and per_day[["confirm", "correct"]].to_numpy().sum() == 70
    changes = history.class_changes(past)
    assert changes.loc[REJECTED, "better"] == changes.loc[REJECTED, "worse"] == "-"
    assert list(changes.index) == [REJECTED, PROMOTED]
    assert history.decisions(past).loc[REJECTED, "reasons"] == REJECTION
    assert PROMOTED in history.verdict(past)


def test_the_history_notebook_runs_with_its_defaults(home_with_history, tmp_path):
    output = tmp_path / "history.ipynb"
    papermill.execute_notebook(
        str(home_with_history.notebooks_dir / "history.ipynb"),
        str(output),
        parameters={"home": str(home_with_history.home)},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    texts, pictures = [], 0
    for cell in nbformat.read(output, as_version=4).cells:
        for shown in cell.get("outputs", []):
            assert shown.get("output_type") != "error", shown
            data = shown.get("data", {})
            texts += [
                shown.get("text", ""),
                data.get("text/plain", ""),
                data.get("text/markdown", ""),
                data.get("text/html", ""),
            ]
            pictures += "image/png" in data
    text = "\n".join(texts)
    assert "**3 model versions** (1 first model, 1 promoted, 1 rejected); **70 labelled drawings**" in text
    assert f"deployed now: **{deployed_model(home_with_history.models_dir).version}**" in text
    assert REJECTION in text  # the rejection's reason, whole
    assert "points better" in text or "points worse" in text  # the closing verdict
    assert pictures >= 2  # the versions over time, the labels per day
