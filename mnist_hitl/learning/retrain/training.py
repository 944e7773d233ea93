"""Training a model: the first one, trained on MNIST alone, and recording a retraining.

Both publish their model through :func:`mnist_hitl.learning.retrain.deployment.publish`, the one
writer of model files; the first model's MLflow run (its lineage's start) is opened here, around it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from mnist_hitl.clock import Stopwatch, timestamp_id
from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain import deployment
from mnist_hitl.model import deployed_model
from mnist_hitl.store import open_store

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
    reason = "forced retrain" if force else "first model"
    network, accuracy, record = _train_on_mnist(settings, epochs, progress, reason)
    version = timestamp_id()
    run = _first_model_run(settings, version, accuracy, record) if record_run else contextlib.nullcontext()
    with open_store(settings) as store, run as run_id:
        outcome = deployment.publish(
            settings,
            store,
            network,
            accuracy,
            record,
            reasons=[f"{reason}, trained on MNIST alone"],
            run_id=run_id,
            version=version,
            mlflow_optional=True,
        )
    log.info("deployed %s (holdout accuracy %.4f)", outcome.version, accuracy)
    return {
        "trained": True,
        "model_version": outcome.version,
        "holdout_accuracy": accuracy,
        "train_seconds": record["train_seconds"],
        "mlflow_run_id": record.get("mlflow_run_id"),
        "mlflow_model_version": outcome.mlflow_version,
    }


def _train_on_mnist(settings: Settings, epochs: int | None, progress: bool, reason: str) -> tuple[object, float, dict]:
    """Train a network on the MNIST train split and score it on the holdout: ``(network, accuracy, record)``."""
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
        "reason": reason,
        "sizes": {"train": len(dataset.y_train), "holdout": len(dataset.y_test)},
    }
    return trained, accuracy, record


@contextlib.contextmanager
def _first_model_run(settings: Settings, version: str, accuracy: float, record: dict) -> Iterator[str | None]:
    """The first model's MLflow run while it is published, ended after; None when MLflow cannot be reached."""
    from mnist_hitl.learning import tracking

    run_id = _start_first_model_run(settings, version, accuracy, record)
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    finally:
        if run_id:
            try:
                tracking.end_run(settings, run_id, status)
            except Exception as error:  # the model stands without its record
                log.warning("could not end the MLflow run of %s: %s", version, error)


def _start_first_model_run(settings: Settings, version: str, accuracy: float, record: dict) -> str | None:
    """Open the first model's run with its parameters and scores; None (said) if MLflow cannot be reached."""
    from mnist_hitl.learning import tracking

    if not tracking.reachable(settings):
        log.warning("MLflow at %s does not answer: %s is not recorded there", settings.tracking_uri, version)
        return None
    try:
        note = tracking.note(
            f"{record['reason']}: {version}, deployed",
            [
                f"MNIST holdout accuracy {accuracy:.2%} ({record['sizes']['holdout']} "
                f"digits); trained on {record['sizes']['train']} {record['data']} digits"
            ],
        )
        tags = {"model_version": version, tracking.NOTE_TAG: note}
        run_id = tracking.start_run(settings, f"first model {version}", "first_model", "init", tags=tags)
        run = tracking.RunLog(settings, run_id)
        run.params({**record["params"], "data": record["data"], **{f"data.{k}": v for k, v in record["sizes"].items()}})
        run.metrics({"holdout_accuracy": accuracy, "train_seconds": record["train_seconds"]})
    except Exception as error:  # the model stands without its record
        log.warning("could not record %s in MLflow: %s", version, error)
        return None
    return run_id


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
    study_files = _search_files(search, Path(output_dir))
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
    run_log.tags(_verdict_tags(verdict, outcome))
    for path, folder in (*((p, "optuna") for p in study_files), *((p, "plots") for p in plots.values())):
        if path:
            run_log.artifact(path, folder)
    return {
        "version": outcome.version,
        "status": outcome.status,
        "mlflow_model_version": outcome.mlflow_version,
        "reasons": verdict.reasons,
        "comparison": comparison.as_json(),
        "best_params": search.best_params,
        "best_value": search.best_value,
        "trials": search.trials,
        "through_label_id": data.through_label_id,
        "data": data.sizes(),
        "seconds": seconds,
    }


def _search_files(search, output_dir: Path) -> tuple[Path, Path | None]:
    """The study's trials as CSV, and a copy of its SQLite database (None when it lives elsewhere)."""
    from mnist_hitl.learning import tracking
    from mnist_hitl.learning.retrain import search as search_lib

    trials_csv = output_dir / "optuna_trials.csv"
    search_lib.trials_frame(search).to_csv(trials_csv, index=False)
    study_db = tracking.sqlite_path(search.storage)
    study_copy = tracking.snapshot_sqlite(study_db, output_dir / "optuna_study.sqlite") if study_db else None
    return trials_csv, study_copy


def _verdict_tags(verdict, outcome) -> dict:
    """The retraining run's tags: the verdict, what became of the challenger, and the run's description."""
    from mnist_hitl.learning import tracking

    word = "promote" if verdict.promote else "reject"
    became = {
        "deployed": "deployed",
        "rejected": "kept on file, not deployed",
        "candidate": "kept on file as a candidate (dry run)",
    }.get(outcome.status, outcome.status)
    return {
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


def _retrain_metrics(search, comparison, outcome, seconds: dict) -> dict:
    """The numbers a retraining logs: the search's best, both models' scores, the stage times."""
    challenger, champion = comparison.challenger, comparison.champion
    return {
        "best_trial_value": search.best_value,
        "challenger_mnist_holdout": challenger.mnist_holdout,
        "champion_mnist_holdout": champion.mnist_holdout,
        **(
            {"fine_tune_mnist_holdout": comparison.fine_tune_mnist_holdout}
            if comparison.fine_tune_mnist_holdout is not None
            else {}
        ),
        "challenger_users_heldout": challenger.users_heldout,
        "champion_users_heldout": champion.users_heldout,
        "promoted": int(outcome.status == "deployed"),
        **{f"{who}_users_log_loss": loss for who, loss in (comparison.users_log_loss or {}).items()},
        **{f"challenger_users_class_{d}": a for d, a in challenger.users_per_class.items()},
        **{f"champion_users_class_{d}": a for d, a in champion.users_per_class.items()},
        **{f"seconds_{k}": v for k, v in seconds.items()},
    }
