"""Champion against challenger: the comparison, the promotion rule, and acting on it.

The rule: promote the challenger when it is better than the deployed champion
on the users' held-out slice (drawings never trained on) by more than
``min_users_gain`` (default 0: strictly better), and not more than
``max_holdout_drop`` (default 0.005, half a point) worse on the MNIST holdout.
With no users' held-out drawings, it must be strictly better on the MNIST
holdout instead.

Acting on it writes, in this order: the model file and its LiteRT export
(``models/model_<version>.*``), the store's record as ``candidate``, the MLflow
model version, then either the deployment (``latest`` replaced atomically,
pointer last) and the record as ``deployed``, or the record as ``rejected`` (the
files stay). A process killed at any point leaves the previous deployment
serving; :func:`reconcile` settles the store's record at the next cycle.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.predictor import ModelFileError, deployed_model
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

MAX_HOLDOUT_DROP = 0.005
MIN_USERS_GAIN = 0.0


@dataclass
class Scores:
    """Accuracies of one model."""

    mnist_holdout: float
    users_heldout: float
    mnist_per_class: dict[int, float] = field(default_factory=dict)
    users_per_class: dict[int, float] = field(default_factory=dict)


@dataclass
class Comparison:
    challenger: Scores
    champion: Scores
    n_mnist_holdout: int
    n_users_heldout: int

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reasons: list[str]


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Accuracy per true digit (only digits that occur)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    return {int(d): float((predicted[labels == d] == d).mean()) for d in range(10) if (labels == d).any()}


def score(network, x_mnist: np.ndarray, y_mnist: np.ndarray, x_users: np.ndarray, y_users: np.ndarray) -> Scores:
    """A Keras model's accuracies on the MNIST holdout and the users' held-out slice."""
    from mnist_hitl.model import predict_proba

    mnist_pred = predict_proba(network, x_mnist).argmax(axis=1)
    users_pred = predict_proba(network, x_users).argmax(axis=1) if len(y_users) else np.zeros(0, dtype=int)
    return Scores(
        float((mnist_pred == y_mnist).mean()) if len(y_mnist) else float("nan"),
        float((users_pred == y_users).mean()) if len(y_users) else float("nan"),
        per_class_accuracy(mnist_pred, y_mnist),
        per_class_accuracy(users_pred, y_users),
    )


def compare(challenger, champion, data) -> Comparison:
    """Score both models on the same MNIST holdout and users' held-out slice (a RetrainData)."""
    args = (data.x_mnist_holdout, data.y_mnist_holdout, data.users_heldout.x, data.users_heldout.y)
    return Comparison(score(challenger, *args), score(champion, *args), len(data.y_mnist_holdout),
                      len(data.users_heldout))


def promotion_rule(challenger: Scores, champion: Scores, max_holdout_drop: float = MAX_HOLDOUT_DROP,
                   min_users_gain: float = MIN_USERS_GAIN) -> Verdict:
    """Decide whether the challenger replaces the champion; the reasons say why, with the numbers."""
    reasons = []
    drop = champion.mnist_holdout - challenger.mnist_holdout
    holdout_ok = drop <= max_holdout_drop + 1e-12
    reasons.append(
        f"MNIST holdout {challenger.mnist_holdout:.4f} vs {champion.mnist_holdout:.4f} "
        f"({-drop * 100:+.2f} points; at most {max_holdout_drop * 100:.2f} points lower allowed): "
        + ("ok" if holdout_ok else "too much lower")
    )
    if _missing(challenger.users_heldout) or _missing(champion.users_heldout):
        better = challenger.mnist_holdout > champion.mnist_holdout
        reasons.append("no users' held-out drawings: the challenger must be better on the MNIST holdout: "
                       + ("it is" if better else "it is not"))
        return Verdict(better and holdout_ok, reasons)
    gain = challenger.users_heldout - champion.users_heldout
    users_ok = gain > min_users_gain
    reasons.append(
        f"users' held-out slice {challenger.users_heldout:.4f} vs {champion.users_heldout:.4f} "
        f"({gain * 100:+.2f} points; must be more than {min_users_gain * 100:+.2f}): "
        + ("better" if users_ok else "not better")
    )
    return Verdict(users_ok and holdout_ok, reasons)


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def plot_per_class(comparison: Comparison):
    """Accuracy per digit, champion against challenger, on the MNIST holdout and the users' slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    panels = (("MNIST holdout", "mnist_per_class", comparison.n_mnist_holdout),
              ("users' held-out slice", "users_per_class", comparison.n_users_heldout))
    for ax, (title, attribute, n) in zip(axes, panels):
        digits = np.arange(10)
        for offset, (name, scores) in zip((-0.2, 0.2), (("champion (before)", comparison.champion),
                                                         ("challenger (after)", comparison.challenger))):
            per_class = getattr(scores, attribute)
            ax.bar(digits + offset, [per_class.get(d, np.nan) for d in digits], width=0.4, label=name)
        ax.set_xticks(digits)
        ax.set_xlabel("digit")
        ax.set_title(f"{title} (n={n})")
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(0, 1.02)
    axes[1].legend(loc="lower right")
    figure.tight_layout()
    plt.close(figure)
    return figure


# acting on the verdict ----------------------------------------------------------------

@dataclass
class Outcome:
    version: str
    status: str  # deployed | rejected
    keras_file: str
    mlflow_version: str | None = None
    pointer: dict | None = None

    def as_json(self) -> dict:
        return asdict(self)


def apply_verdict(settings: Settings, challenger, verdict: Verdict, comparison: Comparison, details: dict,
                  run_id: str | None = None, deploy: bool = True) -> Outcome:
    """Save the challenger, record it, and deploy it if the verdict says so.

    Args:
        settings: where the models and the store live.
        challenger: the trained Keras model.
        verdict: from :func:`promotion_rule`.
        comparison: both models' scores (kept in the store's record).
        details: anything else for the record (parameters, cycle id, data sizes...).
        run_id: the MLflow run to log the model into (and register it from); none: no MLflow.
        deploy: False keeps the challenger on file as a candidate whatever the verdict (a dry run).
    """
    from mnist_hitl import model as model_lib
    from mnist_hitl import tracking

    saved = model_lib.save_model(challenger, settings.models_dir)
    record = {**details, "comparison": comparison.as_json(), "reasons": verdict.reasons,
              "verdict": "promote" if verdict.promote else "reject", "mlflow_run_id": run_id}
    accuracy = comparison.challenger.mnist_holdout
    with Store(settings.db_path) as store:
        store.record_model_version(saved.version, saved.keras_path.name, accuracy, "candidate", record)
    mlflow_version = None
    if run_id:
        mlflow_version = tracking.log_keras_model(settings, run_id, challenger, saved.version)
        record["mlflow_model_version"] = mlflow_version
    if not deploy:
        return Outcome(saved.version, "candidate", saved.keras_path.name, mlflow_version)
    if verdict.promote:
        pointer = model_lib.deploy(saved, settings.models_dir, holdout_accuracy=accuracy)
        with Store(settings.db_path) as store:
            store.record_model_version(saved.version, saved.keras_path.name, accuracy, "deployed", record)
        if mlflow_version:
            tracking.mark_promotion(settings, mlflow_version, saved.version, promoted=True, reasons=verdict.reasons)
        _publish_deployed(saved.version)
        log.info("promoted %s", saved.version)
        return Outcome(saved.version, "deployed", saved.keras_path.name, mlflow_version, pointer)
    with Store(settings.db_path) as store:
        store.record_model_version(saved.version, saved.keras_path.name, accuracy, "rejected", record)
    if mlflow_version:
        tracking.mark_promotion(settings, mlflow_version, saved.version, promoted=False, reasons=verdict.reasons)
    log.info("rejected %s", saved.version)
    return Outcome(saved.version, "rejected", saved.keras_path.name, mlflow_version)


def _publish_deployed(version: str) -> None:
    from mnist_hitl import metrics

    metrics.set_deployed_model(version)


def reconcile(settings: Settings) -> list[str]:
    """Make the store's record agree with the deployed pointer after an interrupted cycle.

    Run while holding the cycle lock. The pointer (``latest.json``) is the truth:
    its version is recorded ``deployed``; any other ``candidate`` was left by a
    cycle that died before deciding, and is recorded ``rejected``. Half-written
    model files (``.*.partial*``) are removed.

    Returns:
        What was changed, one line each (empty when all agreed).
    """
    changes = []
    models_dir = Path(settings.models_dir)
    for partial in models_dir.glob(".*partial*"):
        partial.unlink(missing_ok=True)
        changes.append(f"removed half-written {partial.name}")
    try:
        deployed = deployed_model(models_dir).version
    except ModelFileError:
        deployed = None
    with Store(settings.db_path) as store:
        for row in store.model_versions():
            if row["version"] == deployed and row["status"] != "deployed":
                store.record_model_version(row["version"], row["file"], row["holdout_accuracy"], "deployed",
                                           {**row["details"], "reconciled": "deployed but recorded "
                                            f"{row['status']} (cycle interrupted after deployment)"})
                changes.append(f"{row['version']}: recorded as deployed (the pointer says so)")
            elif row["version"] != deployed and row["status"] == "candidate":
                store.record_model_version(row["version"], row["file"], row["holdout_accuracy"], "rejected",
                                           {**row["details"], "reconciled": "cycle interrupted before promotion"})
                changes.append(f"{row['version']}: candidate left by an interrupted cycle, recorded as rejected")
    return changes
