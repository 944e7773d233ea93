"""End to end: users draw in a shifted style and correct the model; `mnist-hitl cycle` learns from them.

Each test works on a temporary home with a quickly trained first model and runs the real
command (monitor and retrain notebooks under papermill, Optuna, MLflow) with a tiny search.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.learning import tracking
from mnist_hitl.learning.loop import cycle as cycle_lib
from mnist_hitl.learning.loop import lock, watermarks
from mnist_hitl.learning.monitor import history
from mnist_hitl.model import deployed_model
from mnist_hitl.store import Store
from mnist_hitl.workbench.suspects import stored_suspects
from tests.support.helpers import run_cli, start_cli
from tests.support.loop import TINY_RETRAIN, draw_and_label, install_models

pytestmark = pytest.mark.slow


@pytest.fixture
def home_quick(home, quick_models):
    install_models(home, quick_models)
    return home


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def readable_notebook(client, run_id: str, name: str) -> str:
    """An executed notebook's HTML page from a run's artifacts: self-contained, its inputs and outputs shown."""
    import html

    page = Path(client.download_artifacts(run_id, f"notebooks/{name}.html")).read_text()
    assert "<script src=" not in page and page.count("data:image/png;base64,") >= 2, name
    assert "notebook_settings" in html.unescape(page), name  # the input cells are kept
    return html.unescape(page)


def cycle(settings, *args: str, extra_env: dict | None = None) -> dict:
    done = run_cli(settings, "cycle", *args, extra_env={**TINY_RETRAIN, **(extra_env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cycle_learns_the_users_style_and_the_app_serves_it(home_quick):
    settings = home_quick
    first = deployed_model(settings.models_dir).version
    from mnist_hitl.workbench import Workbench

    app = Workbench(settings, source="app")  # a running app, started before the cycle
    counts = draw_and_label(settings, 160, seed=11)
    assert counts["corrections"] >= 20 and counts["versions"] == {first}

    summary = cycle(settings)

    # the decision
    assert summary["decision"] is True and summary["new_labels"] == 160
    assert any("exceeds the threshold" in r for r in summary["reasons"])
    assert summary["outcome"] == "promoted", summary["verdict_reasons"]
    new = summary["model_version"]
    assert new != first
    scores = summary["scores"]
    assert scores["challenger"]["users_heldout"] > scores["champion"]["users_heldout"]
    assert set(summary["seconds"]) >= {"prepare", "monitor", "retrain", "record", "total"}

    # the deployment: files, pointer, the store's record, the fast predictor the app uses
    assert (settings.models_dir / f"model_{new}.keras").is_file()
    assert (settings.models_dir / f"model_{new}.tflite").is_file()
    assert deployed_model(settings.models_dir).version == new
    with Store(settings.db_path) as store:
        records = {row["version"]: row for row in store.model_versions()}
        assert records[new]["status"] == "deployed" and records[new]["details"]["cycle_id"] == summary["cycle_id"]
        marks = watermarks.watermarks(store)
        assert marks.retrained_through == marks.seen_through == summary["through_label_id"] == 160
    picture = np.zeros((280, 280), dtype=np.uint8)
    picture[60:220, 130:150] = 255  # a one
    assert app.predict_picture(picture).model_version == new
    app.close()

    # MLflow: a parent run, nested monitor and retrain runs, their artifacts, the registered champion
    client = tracking.client(settings)
    runs = {run.info.run_name: run for run in client.search_runs([tracking.experiment_id(settings)])}
    parent = runs[f"cycle {summary['cycle_id']}"]
    monitor, retrain = runs["monitor"], runs["retrain"]
    assert parent.info.status == monitor.info.status == retrain.info.status == "FINISHED"
    assert monitor.info.end_time <= retrain.info.start_time  # the retraining waited for the monitor's decision
    assert monitor.data.tags["mlflow.parentRunId"] == retrain.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["outcome"] == "promoted" and "drift score" in parent.data.tags["reasons"]
    assert parent.data.params["min_new_labels"] == "20" and parent.data.metrics["promoted"] == 1
    assert monitor.data.metrics["drift_score"] > 0.1 and "error_rate_class_3" in monitor.data.metrics
    assert {
        "notebooks/monitor.ipynb",
        "notebooks/monitor.html",
        "drift/drift_report.html",
        "plots/confusion_matrix.png",
        "decision.json",
    } <= artifacts(client, monitor.info.run_id)
    assert {
        "notebooks/retrain.ipynb",
        "notebooks/retrain.html",
        "optuna/optuna_study.sqlite",
        "optuna/optuna_trials.csv",
        "plots/optuna_history.png",
        "plots/accuracy_per_class.png",
    } <= artifacts(client, retrain.info.run_id)
    # the executed notebooks, readable in MLflow's artifact view, and run descriptions that tell the story
    for run, told in ((monitor, summary["reasons"]), (retrain, summary["verdict_reasons"])):
        page = readable_notebook(client, run.info.run_id, run.info.run_name)
        assert all(reason in page for reason in told), (run.info.run_name, told)
    note = {run.info.run_name: run.data.tags[tracking.NOTE_TAG] for run in runs.values()}
    assert note["monitor"].startswith("**Decision: retrain**") and summary["reasons"][0] in note["monitor"]
    assert note["retrain"].startswith(f"**Verdict: promote. {new} deployed**")
    assert all(reason in note["retrain"] for reason in summary["verdict_reasons"])
    assert note[f"cycle {summary['cycle_id']}"].startswith(f"**Cycle {summary['cycle_id']}: promoted ({new})**")
    assert len(client.get_metric_history(retrain.info.run_id, "trial_value")) == 2
    for name in (
        "challenger_mnist_holdout",
        "champion_mnist_holdout",
        "fine_tune_mnist_holdout",  # the fine-tune before 30% of the champion's weights were kept
        "challenger_users_heldout",
        "champion_users_heldout",
    ):
        assert name in retrain.data.metrics
    # the team: the suspect labels the judging found, stored for the Review tab; the agreement figures
    assert "suspect_labels" in retrain.data.metrics and "agreement_shared_drawings" in parent.data.metrics
    assert "agreement.json" in artifacts(client, parent.info.run_id)
    with Store(settings.db_path) as store:
        suspects, scored_by, _ = stored_suspects(store)
    assert scored_by == summary["cycle_id"] and len(suspects) == retrain.data.metrics["suspect_labels"]
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    logged = mlflow.search_logged_models(
        experiment_ids=[tracking.experiment_id(settings)],
        filter_string=f"source_run_id='{retrain.info.run_id}'",
        output_format="list",
    )
    assert len(logged) == 1
    champion = tracking.champion(settings)
    assert champion["version"] == new and champion["run_id"] == retrain.info.run_id
    assert [h["version"] for h in tracking.promotion_history(settings)] == [new]
    with Store(settings.db_path) as store:
        versions = history.load_history(settings, store).versions.set_index("version")  # the store and the registry
    assert versions.loc[new, "what"] == "promoted" and versions.loc[new, "champion"] == True  # noqa: E712
    assert versions.loc[new, "mlflow_version"] == summary["mlflow_model_version"]
    assert versions.loc[first, "live_n"] == 160

    # running it again counts nothing twice
    again = cycle(settings)
    assert again["outcome"] == "no_new_data"
    assert deployed_model(settings.models_dir).version == new


def test_a_worse_challenger_is_kept_on_file_but_not_promoted(home_quick):
    settings = home_quick
    first = deployed_model(settings.models_dir).version
    counts = draw_and_label(settings, 160, seed=12, styled=False, wrong_labels=True)
    assert counts["corrections"] >= 140  # the model reads them right; the user says otherwise

    # weighted heavily enough that the challenger learns the wrong labels; forced, as a label count asks for it
    summary = cycle(settings, "--force-retrain", extra_env={"MNIST_HITL_OVERSAMPLE": "30"})

    assert summary["decision"] is True and summary["new_labels"] == 160  # the monitor ran and decided
    assert summary["outcome"] == "rejected", summary["verdict_reasons"]
    holdout, fine_tune, users = summary["verdict_reasons"]
    # The challenger keeps 30% of the champion's weights, which pulls its MNIST score back up; the fine-tune
    # it was blended from shows what the labels taught: much worse on MNIST...
    assert "30% of the champion's weights" in fine_tune and "more than 1.50 points lower" in fine_tune, fine_tune
    assert "): better; " in users, users  # ...though "better" on the (mislabelled) users' judged drawings
    rejected = summary["model_version"]
    assert deployed_model(settings.models_dir).version == first
    assert (settings.models_dir / f"model_{rejected}.keras").is_file()  # kept on file
    with Store(settings.db_path) as store:
        status = {row["version"]: row["status"] for row in store.model_versions()}
        assert status == {first: "deployed", rejected: "rejected"}
        assert watermarks.watermarks(store).retrained_through == 160  # tried: these labels are used
    assert tracking.champion(settings) is None and tracking.promotion_history(settings) == []
    client = tracking.client(settings)
    runs = {run.info.run_name: run for run in client.search_runs([tracking.experiment_id(settings)])}
    monitor, retrain = runs["monitor"], runs["retrain"]
    assert monitor.info.status == retrain.info.status == "FINISHED"
    # forced, the retraining waited for no decision: the monitor ran beside it
    assert retrain.info.start_time < monitor.info.end_time and monitor.info.start_time < retrain.info.end_time
    assert "decision.json" in artifacts(client, monitor.info.run_id)
    executed = (settings.runs_dir / f"cycle-{summary['cycle_id']}" / "monitor.ipynb").read_text()
    assert "niceness = 10" in executed  # and gave way to it
    version = client.get_model_version(tracking.REGISTERED_MODEL, summary["mlflow_model_version"])
    assert version.tags["status"] == "rejected" and version.tags[tracking.VERSION_TAG] == rejected


def _kernels_of(home: Path) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel_launcher" in " ".join(process.info["cmdline"] or []) and process.environ().get(
                "MNIST_HITL_HOME"
            ) == str(home):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _completed_trials(home: Path) -> int:
    try:
        with sqlite3.connect(home / "optuna.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_cycle_killed_while_retraining_leaves_the_deployed_model_serving(home_quick):
    settings = home_quick
    first = deployed_model(settings.models_dir).version
    draw_and_label(settings, 60, seed=13)
    process = start_cli(
        settings,
        "cycle",
        extra_env={**TINY_RETRAIN, "MNIST_HITL_TRIALS": "30"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _completed_trials(settings.home) < 1 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert _completed_trials(settings.home) >= 1, "the search never started"
        os.kill(process.pid, signal.SIGKILL)  # in the middle of the Optuna search
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    deadline = time.monotonic() + 30
    while _kernels_of(settings.home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _kernels_of(settings.home) == [], "the retrain kernel outlived its cycle"

    # still serving the first model, and the store agrees
    assert deployed_model(settings.models_dir).version == first
    from mnist_hitl.workbench import Workbench

    with Workbench(settings) as bench:
        assert bench.predict_picture(np.eye(28, dtype=np.uint8) * 255).model_version == first
    with Store(settings.db_path) as store:
        assert [row["status"] for row in store.model_versions()] == ["deployed"]
        assert watermarks.watermarks(store) == watermarks.Watermarks(0, 0, None)  # its labels are not consumed
        interrupted = store.get_meta(cycle_lib.RUNNING_CYCLE)
    assert interrupted

    # the next cycle settles the records first, then has the same labels to work on
    with lock.cycle_lock(settings) as cycle_id, Store(settings.db_path) as store:
        plan = cycle_lib.prepare_cycle(settings, store, cycle_id, False)
    assert f"cycle {interrupted} was interrupted" in plan.reconciled
    assert any("marked KILLED" in line for line in plan.reconciled)
    assert plan.has_new_labels and plan.through_label_id == 60
    client = tracking.client(settings)
    statuses = {run.info.run_name: run.info.status for run in client.search_runs([tracking.experiment_id(settings)])}
    assert statuses == {f"cycle {interrupted}": "KILLED", "monitor": "FINISHED", "retrain": "KILLED"}
