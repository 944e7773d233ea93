"""The model's lineage starts with the first model: ``init`` records it in MLflow and makes it the champion."""

from __future__ import annotations

import logging

import pytest

from mnist_hitl.app.command import free_port
from mnist_hitl.config import get_settings
from mnist_hitl.learning import tracking
from mnist_hitl.learning.retrain.training import train_first_model
from mnist_hitl.model import deployed_model
from mnist_hitl.store import Store

pytestmark = pytest.mark.slow


def test_the_first_model_is_an_mlflow_run_registered_as_version_1_and_the_champion(quick_models):
    settings = get_settings().replace(home=quick_models.parent)  # the home train_first_model trained in
    deployed = deployed_model(quick_models)
    client = tracking.client(settings)
    (run,) = client.search_runs([tracking.experiment_id(settings)])
    assert run.info.status == "FINISHED" and run.data.tags[tracking.KIND_TAG] == "first_model"
    assert run.data.params["epochs"] == "2" and run.data.params["data"] == "bundled"
    assert run.data.params["data.train"] == "4000" and run.data.params["data.holdout"] == "1000"
    assert run.data.metrics["holdout_accuracy"] == pytest.approx(deployed.holdout_accuracy)
    assert run.data.tags[tracking.NOTE_TAG].startswith(f"**first model: {deployed.version}, deployed**")

    champion = tracking.champion(settings)
    assert champion["mlflow_version"] == "1" and champion["version"] == deployed.version
    assert champion["run_id"] == run.info.run_id and champion["status"] == "promoted"
    version = client.get_model_version(tracking.REGISTERED_MODEL, "1")
    assert version.tags["reasons"] == "first model, trained on MNIST alone"
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    (logged,) = mlflow.search_logged_models(experiment_ids=[tracking.experiment_id(settings)], output_format="list")
    assert logged.source_run_id == run.info.run_id
    with Store(settings.db_path) as store:
        (record,) = store.model_versions()
    assert record["details"]["mlflow_run_id"] == run.info.run_id and record["details"]["mlflow_model_version"] == "1"


def test_the_first_model_is_deployed_when_mlflow_does_not_answer(home, monkeypatch, caplog):
    from mnist_hitl.learning.retrain import network as model_lib

    # What is under test is the record, not the training: an untrained network stands in.
    monkeypatch.setattr(model_lib, "train_model", lambda *args, **kwargs: model_lib.build_model())
    settings = home.replace(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING):
        result = train_first_model(settings, progress=False)
    assert result["trained"] and result["mlflow_run_id"] is None and result["mlflow_model_version"] is None
    assert deployed_model(settings.models_dir).version == result["model_version"]
    assert "does not answer" in caplog.text
