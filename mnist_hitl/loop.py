"""The learning loop: monitor the users' labels, decide, retrain, promote, record.

One cycle:

1. **prepare** — take the cycle lock (one cycle at a time), settle what an
   interrupted cycle left (:func:`mnist_hitl.promotion.reconcile`), and snapshot
   the label ids: ``since`` (labels already used by the last retraining),
   ``seen`` (labels already looked at by the last completed cycle) and
   ``through`` (the newest label now). Nothing newer than ``seen``: the cycle
   records that and stops.
2. **monitor** — ``notebooks/monitor.ipynb`` (papermill) looks at the labels in
   (since, through]: per-class errors, drift, and writes the decision as JSON.
3. **retrain** — when the decision (or ``force_retrain``) says so,
   ``notebooks/retrain.ipynb`` runs the Optuna search, trains the challenger,
   compares it with the champion and promotes or rejects it.
4. **record** — the watermarks advance (only now, so a cycle that dies counts
   its labels again next time), the MLflow runs are closed, metrics published.

The retrain decision counts the labels since the last retraining, so labels
that trickle in across several quiet cycles add up; a cycle that finds no
label newer than the previous cycle's does nothing but record that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mnist_hitl import metrics
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

RETRAINED_THROUGH = "loop.retrained_through_label_id"
SEEN_THROUGH = "loop.seen_through_label_id"
LAST_RETRAIN_AT = "loop.last_retrain_at"
LAST_CYCLE = "loop.last_cycle"
RUNNING_CYCLE = "loop.running_cycle"

MONITOR_NOTEBOOK = "monitor.ipynb"
RETRAIN_NOTEBOOK = "retrain.ipynb"

class CycleBusy(RuntimeError):
    """Another learning cycle holds the lock."""


class CycleFailed(RuntimeError):
    """A stage of the cycle failed; the deployed model and the watermarks are unchanged."""


# the decision rule ----------------------------------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    min_new_labels: int
    drift_threshold: float
    fail_threshold: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(settings.min_new_labels, settings.drift_threshold, settings.fail_threshold)


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reasons: list[str]


def decide(new_labels: int, drift_score: float, class_errors: dict[int, int], thresholds: Thresholds) -> Decision:
    """Retrain if there are at least ``min_new_labels`` new labels AND (the drift
    score exceeds ``drift_threshold`` OR some class has at least ``fail_threshold`` errors).

    Args:
        new_labels: labelled drawings since the last retraining.
        drift_score: see :func:`mnist_hitl.drift.intensity_drift` (NaN: not measured).
        class_errors: wrong predictions per true digit among the new labels.
        thresholds: the three thresholds.

    Returns:
        The decision with one reason per condition, numbers included.
    """
    enough = new_labels >= thresholds.min_new_labels
    drifted = not math.isnan(drift_score) and drift_score > thresholds.drift_threshold
    failing = sorted((d for d, n in class_errors.items() if n >= thresholds.fail_threshold),
                     key=lambda d: (-class_errors[d], d))
    reasons = [
        f"{new_labels} new labels since the last retraining "
        + (f"(at least {thresholds.min_new_labels} needed: enough)" if enough
           else f"(fewer than the {thresholds.min_new_labels} needed)"),
        ("drift score not measured (no new drawings)" if math.isnan(drift_score) else
         f"drift score {drift_score:.3f} " + ("exceeds" if drifted else "does not exceed")
         + f" the threshold {thresholds.drift_threshold:g}"),
    ]
    if failing:
        listed = ", ".join(f"{d} ({class_errors[d]})" for d in failing)
        reasons.append(f"classes with at least {thresholds.fail_threshold} errors: {listed}")
    else:
        worst = max(class_errors.values(), default=0)
        reasons.append(f"no class has {thresholds.fail_threshold} errors (most in one class: {worst})")
    retrain = enough and (drifted or bool(failing))
    reasons.append("decision: retrain" if retrain else "decision: do not retrain")
    return Decision(retrain, reasons)


# monitoring -----------------------------------------------------------------------------

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

    def class_table(self):
        """Labels, errors and error rate per digit, as a table (digits as columns)."""
        import pandas as pd

        return pd.DataFrame({
            "labels": self.class_counts,
            "errors": self.class_errors,
            "error rate": {d: self.class_error_rates.get(d, float("nan")) for d in range(10)},
        }, dtype=float).rename_axis("digit").T.round(3)

    def drift_table(self):
        """The normed Wasserstein distance of every feature, as a one-row table."""
        import pandas as pd

        return pd.Series(self.feature_distances, name="normed Wasserstein", dtype=float).round(3).to_frame().T

    def drift_line(self) -> str:
        """One line of Markdown: the drift score and what Evidently found."""
        share = "not run (fewer than 2 drawings)" if math.isnan(self.evidently_share) else \
            f"{self.evidently_share:.0%} of the features drifted {self.drifted_features or ''}"
        return (f"drift score **{self.drift_score:.3f}** (threshold {self.thresholds.drift_threshold:g}); "
                f"Evidently: {share}; report: `{self.report_html or '-'}`")

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
        }


def error_counts(labels: np.ndarray, predicted: np.ndarray) -> tuple[dict[int, int], dict[int, int], np.ndarray]:
    """Per true digit: how many labels, how many wrong predictions; and the 10x10 confusion matrix."""
    labels, predicted = np.asarray(labels, dtype=int), np.asarray(predicted, dtype=int)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    counts = {d: int(confusion[d].sum()) for d in range(10)}
    errors = {d: int(confusion[d].sum() - confusion[d, d]) for d in range(10)}
    return counts, errors, confusion


def monitor(settings: Settings, since_label_id: int, through_label_id: int, thresholds: Thresholds,
            output_dir: Path, reference_size: int = 2000, seed: int = 0) -> MonitorResult:
    """Look at the labels in (since, through]: errors, drift, the decision; writes the pictures and report.

    Args:
        settings: the store and the data.
        since_label_id: the watermark of the last retraining.
        through_label_id: the newest label this cycle considers.
        thresholds: the decision's thresholds.
        output_dir: where ``confusion_matrix.png`` and ``drift_report.html`` go.
        reference_size: how many training digits stand for the training data.
        seed: seed of the reference sample.
    """
    from mnist_hitl import drift
    from mnist_hitl.data import load_mnist
    from mnist_hitl.hpo import user_labels

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with Store(settings.db_path) as store:
        labels = user_labels(store, since_label_id, through_label_id)
        versions: dict[str, int] = {}
        for prediction, label in store.labelled_predictions(since_label_id):
            if label.id <= through_label_id:
                versions[prediction.model_version] = versions.get(prediction.model_version, 0) + 1
    counts, errors, confusion = error_counts(labels.y, labels.predicted)
    rates = {d: errors[d] / counts[d] for d in range(10) if counts[d]}

    train = load_mnist(settings).x_train
    rng = np.random.default_rng(seed)
    reference = train[rng.choice(len(train), min(reference_size, len(train)), replace=False)]
    components = drift.PixelComponents.fit(reference)
    reference_features = drift.image_features(reference, components)
    current_features = drift.image_features(labels.x, components)
    score = drift.intensity_drift(labels.x, reference)
    report_html = None
    share, distances, drifted = float("nan"), drift.feature_distances(reference_features, current_features), []
    if len(labels) >= 2:  # Evidently needs a few rows to compare
        summary = drift.drift_report(reference_features, current_features, thresholds.drift_threshold,
                                     output_dir / "drift_report.html")
        share, distances, drifted = summary.share, summary.per_feature, summary.drifted
        report_html = str(summary.html_path)
    decision = decide(len(labels), score, errors, thresholds)
    figure = plot_confusion(confusion, f"labels {since_label_id + 1}-{through_label_id}")
    confusion_png = output_dir / "confusion_matrix.png"
    figure.savefig(confusion_png, dpi=90)
    return MonitorResult(since_label_id, through_label_id, len(labels), counts, errors, rates, confusion, score,
                         share, distances, drifted, decision, thresholds, report_html, str(confusion_png), versions,
                         reference_features, current_features)


def plot_confusion(confusion: np.ndarray, title: str = ""):
    """The confusion matrix (users' label against predicted digit) as a matplotlib figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 4.6))
    axes = figure.subplots()
    image = axes.imshow(confusion, cmap="Blues")
    for (row, col), value in np.ndenumerate(confusion):
        if value:
            axes.text(col, row, str(value), ha="center", va="center", fontsize=8,
                      color="white" if value > confusion.max() / 2 else "black")
    axes.set_xticks(range(10))
    axes.set_yticks(range(10))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("user's label")
    axes.set_title(f"Confusion matrix {title}".strip())
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    return figure


def save_figure(figure, path: Path | str):
    """Save a figure as PNG and return it as an image a notebook displays."""
    from IPython.display import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return Image(str(path))


def write_json(path: Path | str, data: dict) -> Path:
    """Write JSON atomically (rename into place), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(partial, path)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_decision(path: Path | str) -> dict:
    """The monitor's decision file; a missing or malformed one is an error, never a silent 'no'."""
    try:
        decision = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise CycleFailed(f"the monitor wrote no readable decision at {path}: {error}") from error
    if not isinstance(decision.get("retrain"), bool) or not isinstance(decision.get("reasons"), list):
        raise CycleFailed(f"{path} is not a decision (needs 'retrain' and 'reasons')")
    return decision


def log_monitor(run_log, result: MonitorResult, decision_path: Path | str | None = None) -> None:
    """Log the monitor's parameters, metrics, decision and pictures into its MLflow run."""
    run_log.params({**asdict(result.thresholds), "since_label_id": result.since_label_id,
                    "through_label_id": result.through_label_id})
    run_log.metrics({
        "new_labels": result.new_labels,
        "drift_score": result.drift_score,
        "evidently_drift_share": result.evidently_share,
        "retrain": int(result.decision.retrain),
        **{f"errors_class_{d}": n for d, n in result.class_errors.items()},
        **{f"error_rate_class_{d}": r for d, r in result.class_error_rates.items()},
        **{f"drift_{name}": value for name, value in result.feature_distances.items()},
    })
    run_log.tags({"decision": "retrain" if result.decision.retrain else "no retrain",
                  "reasons": "\n".join(result.decision.reasons)})
    features_png = Path(result.confusion_png).parent / "drift_features.png" if result.confusion_png else None
    for path, folder in ((result.confusion_png, "plots"), (features_png, "plots"), (result.report_html, "drift"),
                         (decision_path, None)):
        if path:
            run_log.artifact(path, folder)


class Stopwatch:
    """Seconds spent per named stage: ``with clock("search"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)


def record_retrain(run_log, settings: Settings, data, search, params, comparison, verdict, outcome,
                   plots: dict, output_dir: Path, seconds: dict, run_parameters: dict) -> dict:
    """Log a retraining into its MLflow run (parameters, every trial, scores, study, plots) and return its result.

    The result is what the cycle reads back (``retrain_result.json``).
    """
    from mnist_hitl import hpo, tracking

    output_dir = Path(output_dir)
    trials_csv = output_dir / "optuna_trials.csv"
    hpo.trials_frame(search).to_csv(trials_csv, index=False)
    study_db = tracking.sqlite_path(search.storage)
    study_copy = tracking.snapshot_sqlite(study_db, output_dir / "optuna_study.sqlite") if study_db else None
    scores = comparison.as_json()
    run_log.params({**run_parameters, **{f"data.{k}": v for k, v in data.sizes().items()},
                    **{f"best.{k}": v for k, v in search.best_params.items()}, "study_name": search.study_name,
                    "final.epochs": params.epochs})
    run_log.metrics({
        "best_trial_value": search.best_value,
        "challenger_mnist_holdout": comparison.challenger.mnist_holdout,
        "champion_mnist_holdout": comparison.champion.mnist_holdout,
        "challenger_users_heldout": comparison.challenger.users_heldout,
        "champion_users_heldout": comparison.champion.users_heldout,
        "promoted": int(outcome.status == "deployed"),
        **{f"challenger_users_class_{d}": a for d, a in comparison.challenger.users_per_class.items()},
        **{f"champion_users_class_{d}": a for d, a in comparison.champion.users_per_class.items()},
        **{f"seconds_{k}": v for k, v in seconds.items()},
    })
    run_log.tags({"verdict": "promote" if verdict.promote else "reject", "status": outcome.status,
                  "model_version": outcome.version, "reasons": "\n".join(verdict.reasons)})
    for path, folder in ((trials_csv, "optuna"), (study_copy, "optuna"), *((p, "plots") for p in plots.values())):
        if path:
            run_log.artifact(path, folder)
    return {"version": outcome.version, "status": outcome.status, "mlflow_model_version": outcome.mlflow_version,
            "reasons": verdict.reasons, "comparison": scores, "best_params": search.best_params,
            "best_value": search.best_value, "trials": search.trials, "through_label_id": data.through_label_id,
            "data": data.sizes(), "seconds": seconds}


# watermarks -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Watermarks:
    retrained_through: int  # newest label id used by the last retraining
    seen_through: int  # newest label id looked at by the last completed cycle
    last_retrain_at: str | None


def watermarks(store: Store) -> Watermarks:
    return Watermarks(int(store.get_meta(RETRAINED_THROUGH, "0")), int(store.get_meta(SEEN_THROUGH, "0")),
                      store.get_meta(LAST_RETRAIN_AT))


def newest_label_id(store: Store) -> int:
    return max((label.id for label in store.labels()), default=0)


def advance_watermarks(store: Store, seen_through: int, retrained_through: int | None = None) -> Watermarks:
    """Move the watermarks forward (never back); ``retrained_through`` only after a retraining."""
    current = watermarks(store)
    store.set_meta(SEEN_THROUGH, str(max(current.seen_through, seen_through)))
    if retrained_through is not None:
        store.set_meta(RETRAINED_THROUGH, str(max(current.retrained_through, retrained_through)))
        store.set_meta(LAST_RETRAIN_AT, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return watermarks(store)


# one cycle at a time ----------------------------------------------------------------------

def lock_path(settings: Settings) -> Path:
    return settings.home / "cycle.lock"


@contextlib.contextmanager
def cycle_lock(settings: Settings) -> Iterator[str]:
    """Hold the cycle lock (``flock`` on ``$MNIST_HITL_HOME/cycle.lock``) and yield a new cycle id.

    The kernel releases the lock when the holder exits, however it exits.

    Raises:
        CycleBusy: another cycle holds it; the message says which and since when.
    """
    path = lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                info = json.loads(holder)
                who = f"cycle {info['cycle_id']} (pid {info['pid']}, started {info['started']})"
            except (ValueError, KeyError, TypeError):
                who = "another cycle"
            raise CycleBusy(f"another learning cycle is running: {who}; this one exits without doing anything") \
                from None
        now = datetime.now(timezone.utc)
        cycle_id = now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"cycle_id": cycle_id, "pid": os.getpid(),
                                  "started": now.isoformat(timespec="seconds")}).encode(), 0)
        try:
            yield cycle_id
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# the cycle --------------------------------------------------------------------------------

Runner = Callable[..., object]


def _direct(name: str, function: Callable, *args, **kwargs):
    return function(*args, **kwargs)


@dataclass
class CyclePlan:
    """The snapshot a cycle works from."""

    cycle_id: str
    since_label_id: int
    seen_through: int
    through_label_id: int
    force_retrain: bool
    run_dir: Path
    reconciled: list[str] = field(default_factory=list)

    @property
    def has_new_labels(self) -> bool:
        return self.through_label_id > self.seen_through


def prepare_cycle(settings: Settings, cycle_id: str, force_retrain: bool) -> CyclePlan:
    """Settle what an interrupted cycle left, then snapshot the watermarks and the newest label."""
    from mnist_hitl import promotion

    changes = promotion.reconcile(settings)
    with Store(settings.db_path) as store:
        interrupted = store.get_meta(RUNNING_CYCLE)
        if interrupted:
            changes.append(f"cycle {interrupted} was interrupted")
            changes += _settle_interrupted(settings, store, interrupted)
            store.set_meta(RUNNING_CYCLE, "")
        marks = watermarks(store)
        through = newest_label_id(store)
    run_dir = settings.runs_dir / f"cycle-{cycle_id}"
    return CyclePlan(cycle_id, marks.retrained_through, marks.seen_through, through, force_retrain, run_dir, changes)


def _settle_interrupted(settings: Settings, store: Store, cycle_id: str) -> list[str]:
    """An interrupted cycle's retraining that finished still counts; its MLflow runs are closed."""
    from mnist_hitl import tracking
    from mnist_hitl.predictor import ModelFileError, deployed_model

    changes = []
    for row in store.model_versions():
        details = row["details"]
        finished = row["status"] == "deployed" or (row["status"] == "rejected" and "reconciled" not in details)
        if details.get("cycle_id") == cycle_id and finished and details.get("through_label_id") is not None:
            advance_watermarks(store, int(details["through_label_id"]), int(details["through_label_id"]))
            changes.append(f"its retraining of {row['version']} had finished ({row['status']}): watermarks advanced")
    try:
        killed = tracking.fail_stale_runs(settings, cycle_id)
        if killed:
            changes.append(f"{killed} MLflow run(s) of it marked KILLED")
        deployed = deployed_model(settings.models_dir).version
        if tracking.sync_champion(settings, deployed):
            changes.append(f"champion alias moved to the deployed {deployed}")
    except ModelFileError:
        pass
    except Exception as error:  # the tracking server may be down; the store is what must be right
        log.warning("could not settle the MLflow records of cycle %s: %s", cycle_id, error)
    return changes


def run_notebook(settings: Settings, name: str, output: Path, parameters: dict) -> Path:
    """Execute one of the loop's notebooks with papermill; the executed copy is written even on failure.

    Raises:
        CycleFailed: a cell raised; the message names the executed notebook to read.
    """
    import papermill

    source = settings.notebooks_dir / name
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(source), str(output), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(output.parent), request_save_on_cell_execute=False)
    except papermill.PapermillExecutionError as error:
        raise CycleFailed(f"{name} failed ({error.ename}: {error.evalue}); see {output}") from error
    return output


def retrain_overrides(settings: Settings) -> dict:
    """The retraining parameters the settings give (``MNIST_HITL_TRIALS``...)."""
    return {"n_trials": settings.n_trials, "epochs_per_trial": settings.epochs_per_trial,
            "final_epochs": settings.final_epochs, "oversample": settings.oversample}


def _monitor_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    from mnist_hitl import tracking

    run_id = tracking.start_run(settings, "monitor", "monitor", plan.cycle_id, parent_run)
    output = plan.run_dir / MONITOR_NOTEBOOK
    decision_path = plan.run_dir / "decision.json"
    thresholds = Thresholds.from_settings(settings)
    parameters = {
        "home": str(settings.home), "tracking_uri": settings.tracking_uri, "mlflow_run_id": run_id,
        "cycle_id": plan.cycle_id, "since_label_id": plan.since_label_id,
        "through_label_id": plan.through_label_id, **asdict(thresholds),
        "output_dir": str(plan.run_dir), "decision_path": str(decision_path), **extra,
    }
    status = "FAILED"
    try:
        run_notebook(settings, MONITOR_NOTEBOOK, output, parameters)
        decision = read_decision(decision_path)
        status = "FINISHED"
        return decision, run_id
    finally:
        run_log = tracking.RunLog(settings, run_id)
        run_log.artifact(output, "notebooks")
        tracking.end_run(settings, run_id, status)


def _retrain_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    from mnist_hitl import tracking

    run_id = tracking.start_run(settings, "retrain", "retrain", plan.cycle_id, parent_run)
    output = plan.run_dir / RETRAIN_NOTEBOOK
    result_path = plan.run_dir / "retrain_result.json"
    parameters = {
        "home": str(settings.home), "tracking_uri": settings.tracking_uri, "mlflow_run_id": run_id,
        "cycle_id": plan.cycle_id, "through_label_id": plan.through_label_id,
        "output_dir": str(plan.run_dir), "result_path": str(result_path), **retrain_overrides(settings), **extra,
    }
    status = "FAILED"
    try:
        run_notebook(settings, RETRAIN_NOTEBOOK, output, parameters)
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError) as error:
            raise CycleFailed(f"the retrain notebook wrote no readable result at {result_path}: {error}") from error
        status = "FINISHED"
        return result, run_id
    finally:
        tracking.RunLog(settings, run_id).artifact(output, "notebooks")
        tracking.end_run(settings, run_id, status)


def run_cycle(force_retrain: bool = False, settings: Settings | None = None, *, monitor_params: dict | None = None,
              retrain_params: dict | None = None, runner: Runner | None = None) -> dict:
    """Run one learning cycle now, in this process (no Prefect server needed).

    Args:
        force_retrain: retrain whatever the monitor decides (the monitor still runs and is recorded).
        settings: defaults to the environment's settings.
        monitor_params: extra papermill parameters of the monitor notebook (e.g. ``reference_size``).
        retrain_params: extra papermill parameters of the retrain notebook (``n_trials``,
            ``epochs_per_trial``, ``final_epochs``, ``oversample``...); the ``MNIST_HITL_TRIALS``,
            ``MNIST_HITL_EPOCHS_PER_TRIAL``, ``MNIST_HITL_FINAL_EPOCHS`` and ``MNIST_HITL_OVERSAMPLE``
            environment variables set them too.
        runner: how each stage is called, ``runner(name, function, *args)``; the Prefect flow
            passes one that runs each stage as a task.

    Returns:
        A summary: ``outcome`` (``busy``, ``no_new_data``, ``no_retrain``, ``promoted``,
        ``rejected``), the decision and its reasons, the model version, the stage times.

    Raises:
        CycleFailed: a stage failed; the deployed model and the watermarks are unchanged.
    """
    settings = settings or get_settings()
    call = runner or _direct
    try:
        with cycle_lock(settings) as cycle_id:
            return _cycle(settings, cycle_id, force_retrain, monitor_params or {}, retrain_params or {}, call)
    except CycleBusy as busy:
        log.warning("%s", busy)
        metrics.record_cycle("busy")
        return {"outcome": "busy", "message": str(busy)}


def _cycle(settings: Settings, cycle_id: str, force_retrain: bool, monitor_params: dict, retrain_params: dict,
           call: Runner) -> dict:
    from mnist_hitl import tracking

    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def timed(name: str, function: Callable, *args):
        start = time.perf_counter()
        try:
            return call(name, function, *args)
        finally:
            seconds[name] = round(time.perf_counter() - start, 2)

    plan: CyclePlan = timed("prepare", prepare_cycle, settings, cycle_id, force_retrain)
    summary: dict = {"cycle_id": cycle_id, "force_retrain": force_retrain, "since_label_id": plan.since_label_id,
                     "through_label_id": plan.through_label_id, "reconciled": plan.reconciled}
    if not plan.has_new_labels and not force_retrain:
        summary.update(outcome="no_new_data",
                       message=f"no label newer than {plan.seen_through} since the last cycle: nothing to do")
        timed("record", _record_quiet_cycle, settings, plan, summary)
        seconds["total"] = round(time.perf_counter() - started, 2)
        summary["seconds"] = seconds
        _remember(settings, summary)
        metrics.record_cycle("no_new_data")
        return summary

    with Store(settings.db_path) as store:
        store.set_meta(RUNNING_CYCLE, cycle_id)  # first: a cycle killed from here on is settled by the next
    parent_run = tracking.start_run(settings, f"cycle {cycle_id}", "cycle", cycle_id,
                                    tags={"force_retrain": str(force_retrain)})
    summary["mlflow_run_id"] = parent_run
    parent = tracking.RunLog(settings, parent_run)
    try:
        parent.params({"force_retrain": force_retrain, **asdict(Thresholds.from_settings(settings)),
                       "since_label_id": plan.since_label_id, "seen_through": plan.seen_through,
                       "through_label_id": plan.through_label_id, **{f"retrain.{k}": v for k, v in
                                                                       {**retrain_overrides(settings),
                                                                        **retrain_params}.items()}})
        decision, monitor_run = timed("monitor", _monitor_stage, settings, plan, parent_run, monitor_params)
        summary.update(decision=decision["retrain"], reasons=decision["reasons"], new_labels=decision["new_labels"],
                       drift_score=decision.get("drift_score"), monitor_run_id=monitor_run)
        metrics.record_monitor(_number(decision.get("drift_score")),
                               {int(k): float(v) for k, v in decision.get("class_error_rates", {}).items()},
                               int(decision["new_labels"]))
        retrain_result = None
        if force_retrain or decision["retrain"]:
            if force_retrain and not decision["retrain"]:
                summary["reasons"] = [*decision["reasons"], "retraining anyway: --force-retrain"]
            retrain_result, retrain_run = timed("retrain", _retrain_stage, settings, plan, parent_run, retrain_params)
            summary.update(retrain_run_id=retrain_run, model_version=retrain_result["version"],
                           mlflow_model_version=retrain_result.get("mlflow_model_version"),
                           promoted=retrain_result["status"] == "deployed",
                           verdict_reasons=retrain_result["reasons"], scores=retrain_result["comparison"],
                           retrain_seconds=retrain_result.get("seconds"))
            summary["outcome"] = "promoted" if summary["promoted"] else "rejected"
        else:
            summary["outcome"] = "no_retrain"
        timed("record", _record_cycle, settings, plan, summary, retrain_result, parent)
    except BaseException as error:
        summary.update(outcome="failed", error=f"{type(error).__name__}: {error}")
        seconds["total"] = round(time.perf_counter() - started, 2)
        summary["seconds"] = seconds
        with contextlib.suppress(Exception):
            parent.tags({"outcome": "failed", "error": summary["error"][:4000]})
            tracking.end_run(settings, parent_run, "FAILED" if isinstance(error, Exception) else "KILLED")
        with contextlib.suppress(Exception):
            _remember(settings, summary)
            with Store(settings.db_path) as store:
                store.set_meta(RUNNING_CYCLE, "")
        metrics.record_cycle("failed")
        if isinstance(error, CycleFailed):
            raise
        if isinstance(error, Exception):
            raise CycleFailed(f"cycle {cycle_id} failed: {summary['error']}") from error
        raise
    seconds["total"] = round(time.perf_counter() - started, 2)
    summary["seconds"] = seconds
    with contextlib.suppress(Exception):
        parent.metrics({f"seconds_{k}": v for k, v in seconds.items()})
        parent.json(summary, "cycle_summary.json")
    _remember(settings, summary)
    metrics.record_cycle(summary["outcome"])
    return summary


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _record_cycle(settings: Settings, plan: CyclePlan, summary: dict, retrain_result: dict | None,
                  parent) -> None:
    """Advance the watermarks and close the parent run: the cycle is complete."""
    from mnist_hitl import tracking

    with Store(settings.db_path) as store:
        retrained = retrain_result["through_label_id"] if retrain_result else None
        marks = advance_watermarks(store, plan.through_label_id, retrained)
        store.set_meta(RUNNING_CYCLE, "")
    summary["watermarks"] = asdict(marks)
    parent.metrics({"new_labels": summary.get("new_labels"), "drift_score": _number(summary.get("drift_score")),
                    "retrain": int(bool(retrain_result)), "promoted": int(bool(summary.get("promoted")))})
    parent.tags({"outcome": summary["outcome"], "decision": "retrain" if summary.get("decision") else "no retrain",
                 "reasons": "\n".join(summary.get("reasons", [])),
                 **({"model_version": summary["model_version"]} if summary.get("model_version") else {})})
    tracking.end_run(settings, parent.run_id, "FINISHED")


def _record_quiet_cycle(settings: Settings, plan: CyclePlan, summary: dict) -> None:
    """A cycle with nothing new: one short MLflow run saying so, and the store's note."""
    from mnist_hitl import tracking

    try:
        run_id = tracking.start_run(settings, f"cycle {plan.cycle_id}", "cycle", plan.cycle_id,
                                    tags={"outcome": "no_new_data", "reasons": summary["message"]})
        tracking.RunLog(settings, run_id).metrics({"new_labels": 0})
        tracking.end_run(settings, run_id, "FINISHED")
        summary["mlflow_run_id"] = run_id
    except Exception as error:  # an unreachable tracking server must not fail a cycle that does nothing
        log.warning("could not record the quiet cycle in MLflow: %s", error)


def _remember(settings: Settings, summary: dict) -> None:
    with Store(settings.db_path) as store:
        store.set_meta(LAST_CYCLE, json.dumps(summary, default=_json_default))


def last_cycle(settings: Settings | None = None) -> dict | None:
    """The summary of the last cycle that ran to an end (or failed), from the store."""
    settings = settings or get_settings()
    with Store(settings.db_path) as store:
        text = store.get_meta(LAST_CYCLE)
    return json.loads(text) if text else None


# the notebooks' side ---------------------------------------------------------------------

def notebook_settings(home: str | None = None, tracking_uri: str | None = None) -> Settings:
    """Settings inside a notebook run by the cycle: the cycle's home and tracking URI win."""
    if home:
        os.environ["MNIST_HITL_HOME"] = str(home)
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = str(tracking_uri)
    return get_settings()


def resolve_window(settings: Settings, since_label_id: int | None, through_label_id: int | None) -> tuple[int, int]:
    """(since, through) label ids: the given ones, or the store's watermark and newest label."""
    with Store(settings.db_path) as store:
        since = watermarks(store).retrained_through if since_label_id is None else int(since_label_id)
        through = newest_label_id(store) if through_label_id is None else int(through_label_id)
    return since, through


def default_output_dir(settings: Settings, kind: str) -> Path:
    now = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return settings.runs_dir / f"{kind}-{now}"


# the schedule ---------------------------------------------------------------------------

def cron_for(minutes: int) -> str | None:
    """A cron expression running every ``minutes``, or None when cron cannot say it (use an interval)."""
    if minutes <= 0:
        raise ValueError("the cycle interval must be positive")
    if minutes < 60 and 60 % minutes == 0:
        return "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"
    if minutes % 60 == 0 and 1440 % minutes == 0:
        hours = minutes // 60
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    return None


def flows_dir() -> Path:
    return Path(os.environ.get("MNIST_HITL_FLOWS", str(Path(__file__).resolve().parent.parent / "flows")))


def serve_schedule(settings: Settings | None = None) -> None:
    """Serve the ``hitl-cycle`` flow on its schedule (every ``MNIST_HITL_CYCLE_MINUTES``), until interrupted.

    Uses the Prefect server at ``PREFECT_API_URL`` (default: the local one on
    ``MNIST_HITL_PREFECT_PORT``). When that is the default and nothing answers,
    starts ``prefect server start`` (SQLite under ``$MNIST_HITL_HOME/prefect``)
    and stops it on exit.
    """
    import importlib
    import subprocess

    settings = settings or get_settings()
    explicit = bool(os.environ.get("PREFECT_API_URL"))
    configure_prefect(settings, server=True)
    api = os.environ["PREFECT_API_URL"]
    server = None
    if not _prefect_answers(api, timeout=30 if explicit else 1):
        if explicit:
            raise RuntimeError(f"no Prefect server answers at {api}: start one with `prefect server start`")
        log_path = settings.prefect_home / "server.log"
        with open(log_path, "ab") as server_log:
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                 "--port", str(settings.prefect_port)],
                stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
        if not _prefect_answers(api, timeout=120):
            server.terminate()
            raise RuntimeError(f"the Prefect server did not start; see {log_path}")
    try:
        # Prefect runs each flow run in a child process that imports the flow's module by name
        folder = str(flows_dir())
        sys.path.insert(0, folder)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)
        module = importlib.import_module("hitl_cycle")
        module.serve(settings)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _prefect_answers(api: str, timeout: float) -> bool:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def configure_prefect(settings: Settings, server: bool = False) -> None:
    """Keep Prefect's files under the home folder, unless the environment says otherwise.

    Call before importing ``prefect``: it reads its settings once.

    Args:
        settings: where the home folder is.
        server: also point ``PREFECT_API_URL`` at the local server (``MNIST_HITL_PREFECT_PORT``)
            when it is not set; without it, a flow run with no API URL uses a temporary local API.
    """
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    if server:
        os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{settings.prefect_port}/api")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


