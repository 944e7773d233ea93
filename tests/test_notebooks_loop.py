"""The learning loop's notebooks, executed with papermill and tiny parameters, outside any cycle."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest
from loop_support import draw_and_label, install_models

from mnist_hitl.store import Store

pytestmark = pytest.mark.slow


def declared(name: str, settings) -> set[str]:
    return set(papermill.inspect_notebook(str(settings.notebooks_dir / name)))


def outputs(path) -> tuple[list[str], list[str]]:
    """(output types, error names) of an executed notebook."""
    notebook = nbformat.read(path, as_version=4)
    kinds, errors = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            kinds += list(output.get("data", {}))
            if output.get("output_type") == "error":
                errors.append(output["ename"])
    return kinds, errors


def test_the_notebooks_declare_their_parameters(home):
    assert declared("monitor.ipynb", home) >= {
        "home", "tracking_uri", "mlflow_run_id", "cycle_id", "since_label_id", "through_label_id",
        "min_new_labels", "drift_threshold", "fail_threshold", "output_dir", "decision_path"}
    assert declared("retrain.ipynb", home) >= {
        "home", "tracking_uri", "mlflow_run_id", "cycle_id", "through_label_id", "n_trials", "epochs_per_trial",
        "final_epochs", "oversample", "users_holdout_fraction", "max_holdout_drop", "output_dir", "result_path"}


@pytest.fixture
def home_drawn(home, quick_models):
    install_models(home, quick_models)
    draw_and_label(home, 40, seed=21)
    return home


def test_monitor_notebook_by_hand(home_drawn, tmp_path):
    out = tmp_path / "monitor"
    papermill.execute_notebook(str(home_drawn.notebooks_dir / "monitor.ipynb"), str(tmp_path / "monitor.ipynb"),
                               parameters={"home": str(home_drawn.home), "output_dir": str(out),
                                           "reference_size": 300, "min_new_labels": 10},
                               kernel_name="python3", progress_bar=False)
    decision = json.loads((out / "decision.json").read_text())
    assert decision["new_labels"] == 40 and decision["since_label_id"] == 0 and decision["through_label_id"] == 40
    assert decision["retrain"] is True and decision["thresholds"]["min_new_labels"] == 10
    assert sum(decision["class_counts"].values()) == 40
    assert (out / "drift_report.html").stat().st_size > 10_000 and (out / "confusion_matrix.png").exists()
    kinds, errors = outputs(tmp_path / "monitor.ipynb")
    assert errors == [] and kinds.count("image/png") >= 2  # the confusion matrix and the feature histograms


def test_monitor_notebook_with_no_labels(home, tmp_path):
    out = tmp_path / "monitor"
    papermill.execute_notebook(str(home.notebooks_dir / "monitor.ipynb"), str(tmp_path / "monitor.ipynb"),
                               parameters={"home": str(home.home), "output_dir": str(out), "reference_size": 200},
                               kernel_name="python3", progress_bar=False)
    decision = json.loads((out / "decision.json").read_text())
    assert decision["retrain"] is False and decision["new_labels"] == 0 and decision["drift_score"] is None


def test_retrain_notebook_by_hand_as_a_dry_run(home_drawn, tmp_path):
    out = tmp_path / "retrain"
    papermill.execute_notebook(str(home_drawn.notebooks_dir / "retrain.ipynb"), str(tmp_path / "retrain.ipynb"),
                               parameters={"home": str(home_drawn.home), "output_dir": str(out), "n_trials": 1,
                                           "final_epochs": 1, "deploy": False},
                               kernel_name="python3", progress_bar=False)
    result = json.loads((out / "retrain_result.json").read_text())
    assert result["status"] == "candidate" and len(result["trials"]) == 1
    assert result["data"]["users_train"] + result["data"]["users_heldout"] == 40
    assert set(result["best_params"]) == {"learning_rate", "dropout", "batch_size"}
    assert (home_drawn.models_dir / f"model_{result['version']}.keras").is_file()
    for name in ("optuna_trials.csv", "optuna_study.sqlite", "optuna_history.png", "accuracy_per_class.png"):
        assert (out / name).exists(), name
    with Store(home_drawn.db_path) as store:
        row = {r["version"]: r for r in store.model_versions()}[result["version"]]
    assert row["status"] == "candidate" and row["details"]["dry_run"]
    kinds, errors = outputs(tmp_path / "retrain.ipynb")
    assert errors == [] and kinds.count("image/png") >= 2
