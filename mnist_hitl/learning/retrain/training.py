"""Training a model: the first one, trained on MNIST alone, and recording a retraining.

Both end in :mod:`mnist_hitl.learning.retrain.deployment`, the one writer of model files.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from mnist_hitl.clock import Stopwatch
from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain import deployment
from mnist_hitl.model import deployed_model, model_files

log = logging.getLogger(__name__)


def train_first_model(
    settings: Settings, force: bool = False, epochs: int | None = None, progress: bool = True, record_run: bool = True
) -> dict:
    """Train, evaluate and deploy a model on MNIST, unless one is deployed already.

    The model's lineage starts here: it is recorded as an MLflow run (parameters, holdout
    accuracy, the model), registered and given the ``champion`` alias. A tracking server
    that cannot be reached is reported and skipped; the model is deployed all the same.

    Args:
        settings: where the model, the store and the data are.
        force: retrain and redeploy even if a model is deployed.
        epochs: overrides ``MNIST_HITL_EPOCHS``.
        progress: show a progress bar while training.
        record_run: record the run in MLflow (False: the store's record only).

    Returns:
        ``{"trained": bool, "model_version": ..., "holdout_accuracy": ..., "train_seconds": ...,
        "mlflow_run_id": ..., "mlflow_model_version": ...}`` (None when not recorded).
    """
    if not force and deployment.has_deployed_model(settings):
        deployed = deployed_model(settings.models_dir)
        return {"trained": False, "model_version": deployed.version, "holdout_accuracy": deployed.holdout_accuracy}

    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.learning.retrain import network as model_lib

    dataset = load_mnist(settings)
    params = model_lib.TrainParams(epochs=epochs or settings.train_epochs, seed=settings.seed)
    clock = Stopwatch()
    trained = clock.call(
        "train",
        model_lib.train_model,
        dataset.x_train,
        dataset.y_train,
        params,
        progress=progress,
        description=f"training on {len(dataset.y_train)} {dataset.source} digits",
    )
    accuracy = model_lib.evaluate(trained, dataset.x_test, dataset.y_test)
    record = {
        "params": asdict(params),
        "data": dataset.source,
        "train_seconds": clock.seconds["train"],
        "reason": "forced retrain" if force else "first model",
        "sizes": {"train": len(dataset.y_train), "holdout": len(dataset.y_test)},
    }
    saved, _ = deployment.save_version(settings, trained, accuracy, record)
    lineage = _record_first_model(settings, trained, saved.version, accuracy, record) if record_run else {}
    record.update(lineage)
    deployment.deploy(settings, saved, accuracy, record)
    if lineage:
        _crown(settings, lineage["mlflow_model_version"], saved.version, record["reason"])
    log.info("deployed %s (holdout accuracy %.4f)", saved.version, accuracy)
    return {
        "trained": True,
        "model_version": saved.version,
        "holdout_accuracy": accuracy,
        "train_seconds": clock.seconds["train"],
        "mlflow_run_id": lineage.get("mlflow_run_id"),
        "mlflow_model_version": lineage.get("mlflow_model_version"),
    }


def _record_first_model(settings: Settings, network, version: str, accuracy: float, record: dict) -> dict:
    """Record the first model as an MLflow run and register it; ``{}`` if MLflow cannot be reached."""
    from mnist_hitl.learning import tracking

    if not tracking.reachable(settings):
        log.warning("MLflow at %s does not answer: %s is not recorded there", settings.tracking_uri, version)
        return {}
    try:
        run_id = tracking.start_run(
            settings,
            f"first model {version}",
            "first_model",
            "init",
            tags={
                "model_version": version,
                tracking.NOTE_TAG: tracking.note(
                    f"{record['reason']}: {version}, deployed",
                    [
                        f"MNIST holdout accuracy {accuracy:.2%} ({record['sizes']['holdout']} "
                        f"digits); trained on {record['sizes']['train']} {record['data']} digits"
                    ],
                ),
            },
        )
        run = tracking.RunLog(settings, run_id)
        run.params({**record["params"], "data": record["data"], **{f"data.{k}": v for k, v in record["sizes"].items()}})
        run.metrics({"holdout_accuracy": accuracy, "train_seconds": record["train_seconds"]})
        files = model_files(settings.models_dir, version)  # saved by save_version: served and fetched by followers
        export, keras_file = files.tflite_path, files.keras_path
        mlflow_version = tracking.log_keras_model(settings, run_id, network, version, export, accuracy, keras_file)
        tracking.end_run(settings, run_id)
    except Exception as error:  # the model stands without its record
        log.warning("could not record %s in MLflow: %s", version, error)
        return {}
    return {"mlflow_run_id": run_id, "mlflow_model_version": mlflow_version}


def _crown(settings: Settings, mlflow_version: str, version: str, reason: str) -> None:
    """Point the ``champion`` alias at the deployed first model."""
    from mnist_hitl.learning import tracking

    try:
        tracking.mark_promotion(settings, mlflow_version, version, True, [f"{reason}, trained on MNIST alone"])
    except Exception as error:
        log.warning("could not move the champion alias to %s: %s", version, error)


def record_retrain(
    run_log,
    settings: Settings,
    data,
    search,
    params,
    comparison,
    verdict,
    outcome,
    plots: dict,
    output_dir: Path,
    seconds: dict,
    run_parameters: dict,
) -> dict:
    """Log a retraining into its MLflow run (parameters, every trial, scores, study, plots) and return its result.

    The result is what the cycle reads back (``retrain_result.json``).
    """
    from mnist_hitl.learning import tracking
    from mnist_hitl.learning.retrain import search as search_lib

    output_dir = Path(output_dir)
    trials_csv = output_dir / "optuna_trials.csv"
    search_lib.trials_frame(search).to_csv(trials_csv, index=False)
    study_db = tracking.sqlite_path(search.storage)
    study_copy = tracking.snapshot_sqlite(study_db, output_dir / "optuna_study.sqlite") if study_db else None
    scores = comparison.as_json()
    run_log.params(
        {
            **run_parameters,
            **{f"data.{k}": v for k, v in data.sizes().items()},
            **{f"best.{k}": v for k, v in search.best_params.items()},
            "study_name": search.study_name,
            "final.epochs": params.epochs,
        }
    )
    run_log.metrics(_retrain_metrics(search, comparison, outcome, seconds))
    word = "promote" if verdict.promote else "reject"
    became = {
        "deployed": "deployed",
        "rejected": "kept on file, not deployed",
        "candidate": "kept on file as a candidate (dry run)",
    }.get(outcome.status, outcome.status)
    run_log.tags(
        {
            "verdict": word,
            "status": outcome.status,
            "model_version": outcome.version,
            "reasons": "\n".join(verdict.reasons),
            tracking.NOTE_TAG: tracking.note(
                f"Verdict: {word}. {outcome.version} {became}",
                verdict.reasons,
                "The executed notebook is `notebooks/retrain.html`.",
            ),
        }
    )
    for path, folder in ((trials_csv, "optuna"), (study_copy, "optuna"), *((p, "plots") for p in plots.values())):
        if path:
            run_log.artifact(path, folder)
    return {
        "version": outcome.version,
        "status": outcome.status,
        "mlflow_model_version": outcome.mlflow_version,
        "reasons": verdict.reasons,
        "comparison": scores,
        "best_params": search.best_params,
        "best_value": search.best_value,
        "trials": search.trials,
        "through_label_id": data.through_label_id,
        "data": data.sizes(),
        "seconds": seconds,
    }


def _retrain_metrics(search, comparison, outcome, seconds: dict) -> dict:
    """The numbers a retraining logs: the search's best, both models' scores, the stage times."""
    challenger, champion = comparison.challenger, comparison.champion
    return {
        "best_trial_value": search.best_value,
        "challenger_mnist_holdout": challenger.mnist_holdout,
        "champion_mnist_holdout": champion.mnist_holdout,
        "challenger_users_heldout": challenger.users_heldout,
        "champion_users_heldout": champion.users_heldout,
        "promoted": int(outcome.status == "deployed"),
        **{f"challenger_users_class_{d}": a for d, a in challenger.users_per_class.items()},
        **{f"champion_users_class_{d}": a for d, a in champion.users_per_class.items()},
        **{f"seconds_{k}": v for k, v in seconds.items()},
    }
