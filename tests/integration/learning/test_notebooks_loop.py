"""The learning loop's notebooks, executed with papermill and tiny parameters, outside any cycle."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest

from mnist_hitl.model import deployed_model
from mnist_hitl.store import Store
from tests.support.loop import draw_and_label, install_models

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


def printed(path) -> str:
    """Everything an executed notebook printed or displayed as text or Markdown."""
    texts = []
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            texts += [output.get("text", ""), data.get("text/plain", ""), data.get("text/markdown", "")]
    return "\n".join(texts)


def test_the_notebooks_declare_their_parameters(home):
    assert declared("monitor.ipynb", home) >= {
        "home",
        "tracking_uri",
        "mlflow_run_id",
        "cycle_id",
        "since_label_id",
        "through_label_id",
        "min_new_labels",
        "drift_threshold",
        "fail_threshold",
        "output_dir",
        "decision_path",
        "niceness",
    }
    assert declared("retrain.ipynb", home) >= {
        "home",
        "tracking_uri",
        "mlflow_run_id",
        "cycle_id",
        "through_label_id",
        "n_trials",
        "epochs_per_trial",
        "final_epochs",
        "oversample",
        "judge_folds",
        "final_fit",
        "champion_share",
        "average_folds",
        "pseudo_confidence",
        "search_now",
        "max_holdout_drop",
        "max_fine_tune_drop",
        "output_dir",
        "result_path",
    }
    assert declared("history.ipynb", home) >= {"home", "tracking_uri", "min_change"}
    assert "home" in declared("explore.ipynb", home)


@pytest.fixture
def home_drawn(home, quick_models):
    install_models(home, quick_models)
    draw_and_label(home, 40, seed=21)
    return home


def test_monitor_notebook_by_hand(home_drawn, tmp_path):
    out = tmp_path / "monitor"
    papermill.execute_notebook(
        str(home_drawn.notebooks_dir / "monitor.ipynb"),
        str(tmp_path / "monitor.ipynb"),
        parameters={"home": str(home_drawn.home), "output_dir": str(out), "reference_size": 300, "min_new_labels": 10},
        kernel_name="python3",
        progress_bar=False,
    )
    decision = json.loads((out / "decision.json").read_text())
    assert decision["new_labels"] == 40 and decision["since_label_id"] == 0 and decision["through_label_id"] == 40
    assert decision["retrain"] is True and decision["thresholds"]["min_new_labels"] == 10
    assert sum(decision["class_counts"].values()) == 40
    assert (out / "drift_report.html").stat().st_size > 10_000 and (out / "confusion_matrix.png").exists()
    kinds, errors = outputs(tmp_path / "monitor.ipynb")
    assert errors == [] and kinds.count("image/png") >= 2  # the confusion matrix and the feature histograms


def test_monitor_notebook_with_no_labels(home, tmp_path):
    out = tmp_path / "monitor"
    papermill.execute_notebook(
        str(home.notebooks_dir / "monitor.ipynb"),
        str(tmp_path / "monitor.ipynb"),
        parameters={"home": str(home.home), "output_dir": str(out), "reference_size": 200},
        kernel_name="python3",
        progress_bar=False,
    )
    decision = json.loads((out / "decision.json").read_text())
    assert decision["retrain"] is False and decision["new_labels"] == 0 and decision["drift_score"] is None


def by_hand(settings, name: str, tmp_path):
    """Execute a notebook as a person does in JupyterLab: every parameter at its default but the home."""
    output = tmp_path / name
    papermill.execute_notebook(
        str(settings.notebooks_dir / name),
        str(output),
        parameters={"home": str(settings.home)},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    return output


def test_every_notebook_runs_by_hand_with_its_defaults_and_a_retraining_by_hand_is_a_dry_run(
    home_drawn, tmp_path, monkeypatch
):
    # A hand run takes the retraining's sizes from the settings, as the cycle does: a tiny search here.
    monkeypatch.setenv("MNIST_HITL_TRIALS", "1")
    monkeypatch.setenv("MNIST_HITL_FINAL_EPOCHS", "1")
    deployed = deployed_model(home_drawn.models_dir).version
    executed = {}
    for name in ("explore.ipynb", "monitor.ipynb", "retrain.ipynb", "history.ipynb"):
        executed[name] = by_hand(home_drawn, name, tmp_path)
        kinds, errors = outputs(executed[name])
        assert errors == [] and kinds.count("image/png") >= 1, name

    (decision,) = home_drawn.runs_dir.glob("monitor-*/decision.json")
    assert json.loads(decision.read_text())["new_labels"] == 40
    (result_path,) = home_drawn.runs_dir.glob("retrain-*/retrain_result.json")
    result, out = json.loads(result_path.read_text()), result_path.parent
    assert result["status"] == "candidate" and len(result["trials"]) == 1
    assert result["data"]["users_labels"] == result["data"]["users_fresh"] == 40  # the first model saw none
    assert set(result["best_params"]) == {"learning_rate", "dropout", "batch_size"}
    assert (home_drawn.models_dir / f"model_{result['version']}.keras").is_file()
    for name in ("optuna_trials.csv", "optuna_study.sqlite", "optuna_history.png", "accuracy_per_class.png"):
        assert (out / name).exists(), name
    with Store(home_drawn.db_path) as store:
        row = {r["version"]: r for r in store.model_versions()}[result["version"]]
    assert row["status"] == "candidate" and row["details"]["dry_run"]

    # a dry run, and it says so: nothing deployed, nothing in MLflow
    assert "nothing is deployed and nothing is logged to MLflow" in printed(executed["retrain.ipynb"])
    assert deployed_model(home_drawn.models_dir).version == deployed
    assert not home_drawn.mlflow_dir.exists()
    assert f"model {deployed}: holdout accuracy" in printed(executed["explore.ipynb"])
    history = printed(executed["history.ipynb"])
    assert "**2 model versions** (1 first model, 1 dry run); **40 labelled drawings**" in history, history[:3000]
