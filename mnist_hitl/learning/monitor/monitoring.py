"""Monitoring: how the deployed model does on the labels since the last retraining.

Per-class errors and a confusion matrix, a drift score and an Evidently report
of the users' drawings against the training digits, and the decision
(:func:`mnist_hitl.learning.monitor.decision.decide`), written as JSON for the cycle and
logged to the monitor's MLflow run. ``notebooks/monitor.ipynb`` shows it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.learning.monitor.decision import Decision, Thresholds, decide
from mnist_hitl.learning.retrain.labels import user_labels, without_held_out
from mnist_hitl.store import Store


class DecisionError(RuntimeError):
    """The monitor wrote no usable decision."""


@dataclass
class MonitorResult:
    """What the monitor notebook computes and shows."""

    since_label_id: int
    through_label_id: int
    new_labels: int
    class_counts: dict[int, int]
    class_errors: dict[int, int]
    class_error_rates: dict[int, float]
    confusion: np.ndarray  # rows: the users' label, columns: the predicted digit
    drift_score: float
    evidently_share: float
    feature_distances: dict[str, float]
    drifted_features: list[str]
    decision: Decision
    thresholds: Thresholds
    report_html: str | None = None
    confusion_png: str | None = None
    model_versions: dict[str, int] = field(default_factory=dict)
    reference_features: object = None  # pandas frames, for the notebook's plots
    current_features: object = None
    doubtful_labels: int | None = None  # all users' latest labels the deployed model doubts (None: no model)
    doubt_confidence: float | None = None

    def class_table(self):
        """Labels, errors and error rate per digit, as a table (digits as columns)."""
        import pandas as pd

        return (
            pd.DataFrame(
                {
                    "labels": self.class_counts,
                    "errors": self.class_errors,
                    "error rate": {d: self.class_error_rates.get(d, float("nan")) for d in range(10)},
                },
                dtype=float,
            )
            .rename_axis("digit")
            .T.round(3)
        )

    def drift_table(self):
        """The normed Wasserstein distance of every feature, as a one-row table."""
        import pandas as pd

        return pd.Series(self.feature_distances, name="normed Wasserstein", dtype=float).round(3).to_frame().T

    def drift_line(self) -> str:
        """One line of Markdown: the drift score and what Evidently found."""
        share = (
            "not run (fewer than 2 drawings)"
            if math.isnan(self.evidently_share)
            else f"{self.evidently_share:.0%} of the features drifted {self.drifted_features or ''}"
        )
        return (
            f"drift score **{self.drift_score:.3f}** (threshold {self.thresholds.drift_threshold:g}); "
            f"Evidently: {share}; report: `{self.report_html or '-'}`"
        )

    def doubt_line(self) -> str:
        """One line of Markdown: how many labels the deployed model doubts, and where to see them."""
        if self.doubtful_labels is None:
            return "doubtful labels: not counted (no deployed model)"
        return (
            f"**{self.doubtful_labels} doubtful labels**: users' latest labels (all, not only this window) that"
            f" the deployed model reads as another digit at >= {self.doubt_confidence:g} confidence;"
            " `mnist-hitl queue --strategy doubtful` lists them for a second look"
        )

    def as_json(self) -> dict:
        return {
            "retrain": self.decision.retrain,
            "reasons": self.decision.reasons,
            "since_label_id": self.since_label_id,
            "through_label_id": self.through_label_id,
            "new_labels": self.new_labels,
            "class_counts": {str(k): v for k, v in self.class_counts.items()},
            "class_errors": {str(k): v for k, v in self.class_errors.items()},
            "class_error_rates": {str(k): v for k, v in self.class_error_rates.items()},
            "drift_score": None if math.isnan(self.drift_score) else self.drift_score,
            "evidently_drift_share": None if math.isnan(self.evidently_share) else self.evidently_share,
            "feature_distances": self.feature_distances,
            "drifted_features": self.drifted_features,
            "thresholds": asdict(self.thresholds),
            "report_html": self.report_html,
            "confusion_png": self.confusion_png,
            "model_versions": self.model_versions,
            "doubtful_labels": self.doubtful_labels,
            "doubt_confidence": self.doubt_confidence,
        }


def error_counts(labels: np.ndarray, predicted: np.ndarray) -> tuple[dict[int, int], dict[int, int], np.ndarray]:
    """Per true digit: how many labels, how many wrong predictions; and the 10x10 confusion matrix."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    counts = {d: int(confusion[d].sum()) for d in range(10)}
    errors = {d: int(confusion[d].sum() - confusion[d, d]) for d in range(10)}
    return counts, errors, confusion


def monitor(
    settings: Settings,
    store: Store,
    since_label_id: int,
    through_label_id: int,
    thresholds: Thresholds,
    output_dir: Path,
    reference_size: int = 2000,
    seed: int = 0,
) -> MonitorResult:
    """Look at the labels in (since, through] that may train (a disputed drawing or an unreviewed suspect's is held
    out, as the retraining holds it out): errors, drift, the decision; writes the pictures and report.

    Args:
        settings: the data, the deployed model.
        store: the users' labels.
        since_label_id: the watermark of the last retraining.
        through_label_id: the newest label this cycle considers.
        thresholds: the decision's thresholds.
        output_dir: where ``confusion_matrix.png`` and ``drift_report.html`` go.
        reference_size: how many training digits stand for the training data.
        seed: seed of the reference sample.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    labels, _ = without_held_out(store, user_labels(store, since_label_id, through_label_id), through_label_id)
    versions = _model_versions(store, since_label_id, through_label_id)
    counts, errors, confusion = error_counts(labels.y, labels.predicted)
    found = _drift(settings, labels.x, thresholds, output_dir, reference_size, seed)
    confusion_png = output_dir / "confusion_matrix.png"
    plot_confusion(confusion, f"labels {since_label_id + 1}-{through_label_id}").savefig(confusion_png, dpi=90)
    return MonitorResult(
        since_label_id=since_label_id,
        through_label_id=through_label_id,
        new_labels=len(labels),
        class_counts=counts,
        class_errors=errors,
        class_error_rates={d: errors[d] / counts[d] for d in range(10) if counts[d]},
        confusion=confusion,
        decision=decide(len(labels), found.drift_score, errors, thresholds),
        thresholds=thresholds,
        confusion_png=str(confusion_png),
        model_versions=versions,
        doubtful_labels=count_doubtful(settings),
        doubt_confidence=settings.doubt_confidence,
        **vars(found),
    )


def _model_versions(store: Store, since_label_id: int, through_label_id: int) -> dict[str, int]:
    """How many of the window's labelled drawings each model version predicted."""
    versions: dict[str, int] = {}
    for prediction, label in store.labelled_predictions(since_label_id):
        if label.id <= through_label_id:
            versions[prediction.model_version] = versions.get(prediction.model_version, 0) + 1
    return versions


@dataclass
class _Drift:
    """What the drift measures found (the :class:`MonitorResult` fields of the same names)."""

    drift_score: float
    evidently_share: float
    feature_distances: dict[str, float]
    drifted_features: list[str]
    report_html: str | None
    reference_features: object
    current_features: object


def _drift(
    settings: Settings, pictures: np.ndarray, thresholds: Thresholds, output_dir: Path, reference_size: int, seed: int
) -> _Drift:
    """The users' drawings against a sample of training digits: the drift score, features, Evidently's report."""
    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.learning.monitor import drift

    train = load_mnist(settings).x_train
    rng = np.random.default_rng(seed)
    reference = train[rng.choice(len(train), min(reference_size, len(train)), replace=False)]
    components = drift.PixelComponents.fit(reference)
    reference_features = drift.image_features(reference, components)
    current_features = drift.image_features(pictures, components)
    score = drift.intensity_drift(pictures, reference)
    report_html = None
    share, distances, drifted = float("nan"), drift.feature_distances(reference_features, current_features), []
    if len(pictures) >= 2:  # Evidently needs a few rows to compare
        summary = drift.drift_report(
            reference_features, current_features, thresholds.drift_threshold, output_dir / "drift_report.html"
        )
        share, distances, drifted = summary.share, summary.per_feature, summary.drifted
        report_html = str(summary.html_path)
    return _Drift(score, share, distances, drifted, report_html, reference_features, current_features)


def count_doubtful(settings: Settings) -> int | None:
    """How many of the users' latest labels the deployed model doubts (None: no usable deployed model)."""
    from mnist_hitl.model import ModelFileError
    from mnist_hitl.workbench import Workbench

    with Workbench(settings, source="monitor") as bench:
        try:
            return len(bench.doubtful_labels())
        except ModelFileError:
            return None


def plot_confusion(confusion: np.ndarray, title: str = ""):
    """The confusion matrix (users' label against predicted digit) as a matplotlib figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 4.6))
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    for (row, col), value in np.ndenumerate(confusion):
        if value:
            axes.text(
                col,
                row,
                str(value),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if value > confusion.max() / 2 else "black",
            )
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("user's label")
    axes.set_title(f"Confusion matrix {title}".strip())
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure


def read_decision(path: Path | str) -> dict:
    """The monitor's decision file; a missing or malformed one is an error, never a silent 'no'."""
    try:
        decision = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise DecisionError(f"the monitor wrote no readable decision at {path}: {error}") from error
    if not isinstance(decision.get("retrain"), bool) or not isinstance(decision.get("reasons"), list):
        raise DecisionError(f"{path} is not a decision (needs 'retrain' and 'reasons')")
    return decision


def log_monitor(run_log, result: MonitorResult, decision_path: Path | str | None = None) -> None:
    """Log the monitor's parameters, metrics, decision and pictures into its MLflow run."""
    run_log.params(
        {
            **asdict(result.thresholds),
            "since_label_id": result.since_label_id,
            "through_label_id": result.through_label_id,
        }
    )
    run_log.metrics(
        {
            "new_labels": result.new_labels,
            "drift_score": result.drift_score,
            "evidently_drift_share": result.evidently_share,
            "retrain": int(result.decision.retrain),
            **({"doubtful_labels": result.doubtful_labels} if result.doubtful_labels is not None else {}),
            **{f"errors_class_{d}": n for d, n in result.class_errors.items()},
            **{f"error_rate_class_{d}": r for d, r in result.class_error_rates.items()},
            **{f"drift_{name}": value for name, value in result.feature_distances.items()},
        }
    )
    from mnist_hitl.learning.tracking import NOTE_TAG, note

    decision = "retrain" if result.decision.retrain else "no retrain"
    run_log.tags(
        {
            "decision": decision,
            "reasons": "\n".join(result.decision.reasons),
            NOTE_TAG: note(
                f"Decision: {decision}",
                result.decision.reasons,
                f"Labels {result.since_label_id + 1} to {result.through_label_id}; the executed "
                "notebook is `notebooks/monitor.html`.",
            ),
        }
    )
    features_png = Path(result.confusion_png).parent / "drift_features.png" if result.confusion_png else None
    for path, folder in (
        (result.confusion_png, "plots"),
        (features_png, "plots"),
        (result.report_html, "drift"),
        (decision_path, None),
    ):
        if path:
            run_log.artifact(path, folder)
