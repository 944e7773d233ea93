"""Is the loop helping? ``mnist_hitl.learning.monitor.history`` and ``notebooks/history.ipynb`` on a seeded store.

The store holds three versions, as cycles leave them: the first model, a rejected challenger and
a promoted one, with the users' drawings labelled while the first and while the promoted one
served. No training: the versions are the session's models under new version names, each with the
newest label it was trained through (``through_label_id``): none for the first model, half the
first drawings' labels for the rejected one, all of them for the promoted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from mnist_hitl.learning.monitor import history
from mnist_hitl.model import deployed_model
from mnist_hitl.store import Store
from tests.support.loop import draw_and_label, install_models

pytestmark = pytest.mark.slow

REJECTED, PROMOTED = "20990101-000000-000", "20990102-000000-000"
REJECTION = (
    "users' judged drawings (10, never trained on by the model that read them) 0.8000 vs 0.8000 (+0.00 points): "
    "not better"
)


def add_version(
    settings, source_models: Path, version: str, promote: bool, reasons: list[str], through_label_id: int
) -> None:
    """Another model's files under a new version, trained through ``through_label_id``, deployed or rejected."""
    from mnist_hitl.learning.retrain.deployment import deploy, reject
    from mnist_hitl.learning.retrain.network import SavedModel

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
        "through_label_id": through_label_id,
        "comparison": {"challenger": {"users_heldout": 0.9}, "champion": {"users_heldout": 0.8}},
    }
    with Store(settings.db_path) as store:
        if promote:
            deploy(settings, store, saved, pointer["holdout_accuracy"], record, reasons=reasons)
        else:
            reject(settings, store, saved, pointer["holdout_accuracy"], record, None, reasons)


@pytest.fixture
def home_with_history(home, quick_models, trained_models):
    install_models(home, quick_models)  # the first model, two epochs
    draw_and_label(home, 40, seed=41)
    with Store(home.db_path) as store:
        newest = max(label.id for label in store.labels())
    add_version(home, quick_models, REJECTED, promote=False, reasons=[REJECTION], through_label_id=newest // 2)
    add_version(
        home,
        trained_models,
        PROMOTED,
        promote=True,
        reasons=["better on the users' judged drawings"],
        through_label_id=newest,
    )
    draw_and_label(home, 30, seed=42, offset=40)
    return home


def accuracy(read: np.ndarray, truth: np.ndarray) -> str:
    return f"{(read == truth).mean():.1%}"


def test_every_version_is_scored_on_the_users_drawings(home_with_history):
    settings = home_with_history
    with Store(settings.db_path) as store:
        past = history.load_history(settings, store)
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
    label_ids = np.array([label.id for _, label in pairs])
    for version in (first, PROMOTED):  # each export reads its own users' drawings as it did live
        mine = made_by == version
        assert (past.predicted[version].to_numpy()[mine] == stored[mine]).all(), version
        assert versions.loc[version, "live_accuracy"] == pytest.approx((stored[mine] == truth[mine]).mean())
    assert versions.loc[REJECTED, "all_accuracy"] == versions.loc[first, "all_accuracy"]  # the same weights

    # unseen: each version on the drawings labelled after it was trained, a different set per version
    newest = int(label_ids[:40].max())  # the newest label when the challengers were trained
    assert list(versions["through_label_id"]) == [0, newest // 2, newest]
    assert list(versions["unseen_n"]) == [70, int((label_ids > newest // 2).sum()), 30]
    assert 40 < versions.loc[REJECTED, "unseen_n"] < 70
    for version, through in ((first, 0), (REJECTED, newest // 2), (PROMOTED, newest)):
        unseen = label_ids > through
        assert versions.loc[version, "unseen_accuracy"] == pytest.approx(
            (past.predicted[version].to_numpy()[unseen] == truth[unseen]).mean()
        ), version
    assert versions.loc[first, "unseen_accuracy"] == versions.loc[first, "all_accuracy"]  # it saw no user label
    assert {"through_label_id", "unseen_n", "unseen"} <= set(past.table().columns)

    per_day = history.labels_per_day(past)
    assert per_day["total"].sum() == 70 and per_day[["confirm", "correct"]].to_numpy().sum() == 70
    changes = history.class_changes(past)
    assert changes.loc[REJECTED, "better"] == changes.loc[REJECTED, "worse"] == "-"
    assert list(changes.index) == [REJECTED, PROMOTED]
    assert history.decisions(past).loc[REJECTED, "reasons"] == REJECTION

    # the verdict: the first model and the deployed one on the 30 drawings the deployed one never trained on
    said = history.verdict(past)
    unseen = label_ids > newest
    now, before = past.predicted[PROMOTED].to_numpy()[unseen], past.predicted[first].to_numpy()[unseen]
    assert "(30, unseen by both)" in said and PROMOTED in said, said
    assert f"reads {accuracy(now, truth[unseen])} and the first model {first} {accuracy(before, truth[unseen])}" in said


def test_the_verdict_falls_back_on_all_labelled_drawings_when_none_is_unseen():
    at = pd.to_datetime(["2099-01-01", "2099-01-02"], utc=True)
    versions = pd.DataFrame({"version": ["a", "b"], "deployed_at": at, "through_label_id": [0, 4]})
    drawings = pd.DataFrame({"label": [1, 2, 3, 4], "label_id": [1, 2, 3, 4]})
    predicted = pd.DataFrame({"a": [1, 0, 0, 0], "b": [1, 2, 3, 0]})
    past = history.History(versions, drawings, pd.DataFrame(), pd.DataFrame(), predicted)
    said = history.verdict(past)
    assert "labelled drawings (4; none is unseen" in said and "reads 75.0% and the first model a 25.0%" in said, said
    assert "**50.0 points better**" in said

    drawings["label_id"] = [1, 2, 5, 6]  # two labelled after b was trained: b reads 3 right and 4 wrong, a neither
    said = history.verdict(history.History(versions, drawings, pd.DataFrame(), pd.DataFrame(), predicted))
    assert "(2, unseen by both)" in said and "reads 50.0% and the first model a 0.0%" in said, said


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
