"""Is the loop helping? Every model version over time, judged on the users' own drawings.

What ``notebooks/history.ipynb`` shows. The versions come from the store's
``model_versions`` (what was trained, deployed, rejected, and why) joined with the
MLflow registry (the registered version, the ``champion`` alias), when it answers.
Each version is scored with its LiteRT export (``models/model_<version>.tflite``)
through :mod:`mnist_hitl.model.predictor`: no TensorFlow, well under a millisecond a drawing.

Each version gets three accuracies on the users' labelled drawings (the latest label
of each drawing), because each answers another question:

- **live**: the drawings made while it was deployed (their predictions carry its
  version), as the users met it; no model is needed.
- **all labels**: every labelled drawing, scored now, the same set for every version.
  A retrained version has been trained on most of them, so this flatters it.
- **unseen**: the drawings labelled after the version was trained (their latest label's id
  is greater than the version's ``through_label_id``, 0 for the first model, which saw no
  user label), which it never trained on: the fair one, smaller and noisier, and a
  different set per version (every label trains the next model eventually, so no slice
  stays unseen by all of them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_hitl.config import Settings
from mnist_hitl.model import Deployed, ModelFileError, export_name, load_export
from mnist_hitl.preprocess import decode_image
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

WHAT = ("first model", "promoted", "rejected", "dry run", "candidate")  # what became of a version
ACCURACIES = {
    "holdout_accuracy": "MNIST holdout",
    "live_accuracy": "live",
    "all_accuracy": "all labels",
    "unseen_accuracy": "unseen",
}


@dataclass
class History:
    """The versions with their scores, the labelled drawings, every label event, and per-class accuracy."""

    versions: pd.DataFrame  # one row per version, oldest first
    drawings: pd.DataFrame  # one row per labelled drawing (its latest label)
    label_events: pd.DataFrame  # every label given (confirmations and corrections), oldest first
    per_class: pd.DataFrame  # version x digit: accuracy on all labelled drawings
    predicted: pd.DataFrame  # drawing x version: the digit each version's export reads (versions without one left out)

    def headline(self) -> str:
        """One line of Markdown: how many versions, labels, and which version serves."""
        counts = self.versions["what"].value_counts()
        parts = ", ".join(f"{counts[what]} {what}" for what in WHAT if what in counts)
        deployed = self.versions.loc[self.versions["deployed_now"], "version"]
        corrections = int((self.drawings["kind"] == "correct").sum())
        return (
            f"**{len(self.versions)} model versions** ({parts or 'none'}); **{len(self.drawings)} labelled "
            f"drawings** ({corrections} corrections); deployed now: "
            f"**{deployed.iloc[0] if len(deployed) else 'nothing'}**"
        )

    def table(self) -> pd.DataFrame:
        """The versions as a person reads them: when, what became of them, their accuracies."""
        columns = [
            "created_at",
            "what",
            "compared_with",
            "mlflow_version",
            "champion",
            "through_label_id",
            "live_n",
            "unseen_n",
            *ACCURACIES,
        ]
        table = self.versions.assign(created_at=self.versions["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
        return table.set_index("version")[columns].rename(columns=ACCURACIES).round(4)


def load_history(settings: Settings, store: Store) -> History:
    """Read the store and the registry, and score every version on every labelled drawing.

    Args:
        settings: the models' folder and the registry.
        store: the versions, the labels and the drawings.
    """
    versions = _versions(settings, store)
    drawings, pictures = _drawings(store)
    events = pd.DataFrame(
        [vars(label) for label in store.labels()], columns=["id", "prediction_id", "label", "kind", "created_at"]
    )
    predicted, scores = {}, []
    for row in versions.itertuples():
        read = _predict(settings.models_dir / export_name(row.file), pictures)
        scores.append(_scores(drawings, row.version, row.through_label_id, read))
        if read is not None:
            predicted[row.version] = read
    score_columns = ["live_n", "live_accuracy", "unseen_n", "all_accuracy", "unseen_accuracy"]
    versions = pd.concat([versions, pd.DataFrame(scores, index=versions.index, columns=score_columns)], axis=1)
    predicted = pd.DataFrame(predicted, index=drawings.index)
    right = predicted.eq(drawings["label"], axis=0)
    per_class = right.groupby(drawings["label"]).mean().T.reindex(columns=range(10))
    return History(versions, drawings, events, per_class.rename_axis(index="version", columns="digit"), predicted)


def _versions(settings: Settings, store: Store) -> pd.DataFrame:
    """The store's versions, oldest first, each with the champion it was judged against and its registry facts."""
    rows = store.model_versions()
    frame = pd.DataFrame(
        [
            {
                "version": row["version"],
                "file": row["file"],
                "created_at": row["created_at"],
                "deployed_at": row["deployed_at"],
                "status": row["status"],
                "holdout_accuracy": row["holdout_accuracy"],
                "details": row["details"],
                "through_label_id": int(row["details"].get("through_label_id") or 0),  # the first model: none
            }
            for row in rows
        ],
        columns=[
            "version",
            "file",
            "created_at",
            "deployed_at",
            "status",
            "holdout_accuracy",
            "details",
            "through_label_id",
        ],
    )
    for column in ("created_at", "deployed_at"):
        frame[column] = _times(frame[column])
    frame["compared_with"] = [_champion_before(frame, row) for row in frame.itertuples()]
    frame["what"] = [_what(row) for row in frame.itertuples()]
    deployed = frame.dropna(subset=["deployed_at"]).sort_values("deployed_at")
    frame["deployed_now"] = frame["version"] == (deployed["version"].iloc[-1] if len(deployed) else None)
    registry = pd.DataFrame(_registry(settings), columns=["version", "mlflow_version", "champion", "registry_status"])
    return frame.merge(registry, on="version", how="left")


def _times(texts: pd.Series) -> pd.Series:
    """The store's ISO 8601 texts as UTC times (None: NaT)."""
    return pd.to_datetime(texts, utc=True, format="ISO8601")


def _champion_before(frame: pd.DataFrame, row) -> str | None:
    """The version deployed when ``row`` was made (the champion a challenger was judged against)."""
    earlier = frame[(frame["version"] != row.version) & (frame["deployed_at"] <= row.created_at)]
    return earlier.sort_values("deployed_at")["version"].iloc[-1] if len(earlier) else None


def _what(row) -> str:
    if row.status == "rejected":
        return "rejected"
    if row.status == "candidate":
        return "dry run" if row.details.get("dry_run") else "candidate"
    return "promoted" if row.compared_with else "first model"


def _registry(settings: Settings) -> list[dict]:
    """The registered versions by model version, or nothing when MLflow does not answer."""
    from mnist_hitl.learning import tracking

    database = tracking.sqlite_path(settings.tracking_uri)
    if database is not None and not database.exists():
        return []  # nothing recorded yet, and reading must not create the database
    try:
        if not tracking.reachable(settings):
            return []
        records = tracking.registered_versions(settings)
    except Exception as error:  # the history stands on the store alone
        log.warning("the MLflow registry could not be read: %s", error)
        return []
    return [
        {
            "version": r["version"],
            "mlflow_version": r["mlflow_version"],
            "champion": r["champion"],
            "registry_status": r["status"],
        }
        for r in records
        if r["version"]
    ]


def _drawings(store: Store) -> tuple[pd.DataFrame, np.ndarray]:
    """Every labelled drawing (its latest label, and that label's id) and its 28x28 picture scaled to [0, 1]."""
    pairs = store.labelled_predictions(0)
    drawings = pd.DataFrame(
        [
            {
                "prediction_id": p.id,
                "made_by": p.model_version,
                "predicted": p.predicted_label,
                "label": label.label,
                "kind": label.kind,
                "labelled_at": label.created_at,
                "label_id": label.id,
            }
            for p, label in pairs
        ],
        columns=["prediction_id", "made_by", "predicted", "label", "kind", "labelled_at", "label_id"],
    )
    drawings["labelled_at"] = _times(drawings["labelled_at"])
    pictures = np.zeros((len(pairs), 28, 28), dtype=np.float32)
    for i, (prediction, _) in enumerate(pairs):
        picture = decode_image(prediction.png)
        pictures[i] = (picture[..., 0] if picture.ndim == 3 else picture) / 255.0
    return drawings, pictures


def _predict(export: Path, pictures: np.ndarray) -> np.ndarray | None:
    """The digits one version's LiteRT export reads in ``pictures``; None when the export is missing or broken."""
    try:
        model = load_export(Deployed(export.stem.removeprefix("model_"), export, None), export.read_bytes())
    except (OSError, ModelFileError) as error:
        log.warning("cannot score %s: %s", export.name, error)
        return None
    predicted = np.empty(len(pictures), dtype=np.int64)
    for i, picture in enumerate(pictures):
        model.interpreter.set_tensor(model.input_index, picture.reshape(1, 28, 28, 1))
        model.interpreter.invoke()
        predicted[i] = int(np.argmax(model.interpreter.get_tensor(model.output_index)[0]))
    return predicted


def _scores(drawings: pd.DataFrame, version: str, through_label_id: int, predicted: np.ndarray | None) -> dict:
    """One version's accuracies: live, on all labelled drawings, and on those it never trained on."""
    live = drawings[drawings["made_by"] == version]
    unseen = _unseen(drawings, through_label_id)
    scores = {
        "live_n": len(live),
        "live_accuracy": _mean(live["predicted"] == live["label"]),
        "unseen_n": int(unseen.sum()),
        "all_accuracy": np.nan,
        "unseen_accuracy": np.nan,
    }
    if predicted is not None:
        right = pd.Series(predicted == drawings["label"].to_numpy(), index=drawings.index)
        scores.update(all_accuracy=_mean(right), unseen_accuracy=_mean(right[unseen]))
    return scores


def _unseen(drawings: pd.DataFrame, through_label_id: int) -> pd.Series:
    """Which drawings a version trained through ``through_label_id`` never saw: labelled (last) after it."""
    return drawings["label_id"] > through_label_id


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else np.nan


# what the notebook shows -------------------------------------------------------------------------


def labels_per_day(history: History) -> pd.DataFrame:
    """Labels given per day (UTC), by kind (confirmations, corrections, and undos if any), and their total."""
    events = history.label_events
    kinds = ["confirm", "correct", *sorted(set(events["kind"]) - {"confirm", "correct"})]
    if events.empty:
        return pd.DataFrame(columns=[*kinds, "total"]).rename_axis("day")
    days = _times(events["created_at"]).dt.strftime("%Y-%m-%d")
    table = pd.crosstab(days.rename("day"), events["kind"]).reindex(columns=kinds, fill_value=0)
    return table.assign(total=table.sum(axis=1))


def class_changes(history: History, min_change: float = 0.0) -> pd.DataFrame:
    """For each version, the digits it reads better or worse than the champion it was judged against.

    Accuracy per digit on all labelled drawings; a change counts when larger than ``min_change``.
    """
    rows = []
    counts = history.drawings["label"].value_counts()
    for row in history.versions.itertuples():
        before = row.compared_with
        if before is None or row.version not in history.per_class.index or before not in history.per_class.index:
            continue
        delta = (history.per_class.loc[row.version] - history.per_class.loc[before]).dropna()

        def listed(selected: pd.Series) -> str:
            return ", ".join(f"{d} ({v:+.0%}, n={counts.get(d, 0)})" for d, v in selected.items()) or "-"

        rows.append(
            {
                "version": row.version,
                "what": row.what,
                "compared_with": before,
                "better": listed(delta[delta > min_change].sort_values(ascending=False)),
                "worse": listed(delta[delta < -min_change].sort_values()),
            }
        )
    return pd.DataFrame(rows, columns=["version", "what", "compared_with", "better", "worse"]).set_index("version")


def decisions(history: History) -> pd.DataFrame:
    """Every promotion, rejection and dry run with its reasons and the scores the verdict compared."""
    rows = []
    for row in history.versions.itertuples():
        details = row.details
        comparison = details.get("comparison") or {}
        reasons = details.get("reasons") or [details.get("reason") or ""]
        rows.append(
            {
                "version": row.version,
                "created_at": row.created_at,
                "what": row.what,
                "compared_with": row.compared_with,
                "challenger on users' judged": (comparison.get("challenger") or {}).get("users_heldout"),
                "champion on users' judged": (comparison.get("champion") or {}).get("users_heldout"),
                "reasons": "; ".join(r for r in reasons if r),
            }
        )
    return pd.DataFrame(rows).set_index("version") if rows else pd.DataFrame()


def verdict(history: History) -> str:
    """One line of Markdown: the deployed version against the first model, on the drawings it never trained on.

    Those are the drawings labelled after the deployed version was trained; the first model saw
    none of them either. When there are none yet, all labelled drawings (which flatter the deployed
    version), and the line says so.
    """
    versions = history.versions.dropna(subset=["deployed_at"]).sort_values("deployed_at")
    if len(versions) < 2:
        return "Fewer than two models have been deployed: nothing to compare yet."
    first, now = versions.iloc[0], versions.iloc[-1]
    if first["version"] not in history.predicted or now["version"] not in history.predicted:
        return f"The first model {first['version']} or the deployed {now['version']} has no export to score."
    chosen = _unseen(history.drawings, int(now["through_label_id"]))
    if chosen.any():
        name = f"drawings labelled since the deployed version was trained ({int(chosen.sum())}, unseen by both)"
    else:
        chosen = pd.Series(True, index=history.drawings.index)
        name = (
            f"labelled drawings ({len(chosen)}; none is unseen by the deployed version yet, "
            "and it trained on them: this flatters it)"
        )
    if not chosen.any():
        return "No labelled drawings yet: nothing to compare on."
    truth = history.drawings.loc[chosen, "label"]
    accuracy_now = _mean(history.predicted.loc[chosen, now["version"]] == truth)
    accuracy_first = _mean(history.predicted.loc[chosen, first["version"]] == truth)
    change = accuracy_now - accuracy_first
    word = "better" if change > 0 else "worse" if change < 0 else "different"
    return (
        f"On the users' {name}, the deployed **{now['version']}** reads {accuracy_now:.1%} and the first "
        f"model {first['version']} {accuracy_first:.1%}: **{abs(change) * 100:.1f} points {word}**."
    )


def plot_versions(history: History):
    """The versions' accuracies over time, deployed versions joined by a line."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(9, 4))
    versions = history.versions
    markers = {"first model": "s", "promoted": "o", "rejected": "x", "dry run": "+", "candidate": "."}
    for (column, name), colour in zip(ACCURACIES.items(), ("grey", "tab:blue", "tab:orange", "tab:green")):
        deployed = versions.dropna(subset=["deployed_at"])
        ax.plot(deployed["created_at"], deployed[column], color=colour, alpha=0.6, label=name)
        for what, group in versions.groupby("what"):
            ax.scatter(group["created_at"], group[column], color=colour, marker=markers.get(what, "."))
    ax.set_ylabel("accuracy")
    ax.set_title("model versions (square: first, circle: promoted, x: rejected, +: dry run)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def plot_labels_per_day(table: pd.DataFrame):
    """Labels per day, stacked by kind."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(9, 3))
    table.drop(columns="total").plot.bar(stacked=True, ax=ax, color=["tab:green", "tab:red", "tab:grey"])
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("labels")
    figure.tight_layout()
    return figure
