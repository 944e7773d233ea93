"""The retrain decision: a pure rule over the monitor's numbers, returning its reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnist_hitl.config import Settings


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
        drift_score: see :func:`mnist_hitl.learning.monitor.drift.intensity_drift` (NaN: not measured).
        class_errors: wrong predictions per true digit among the new labels.
        thresholds: the three thresholds.

    Returns:
        The decision with one reason per condition, numbers included.
    """
    enough = new_labels >= thresholds.min_new_labels
    drifted = not math.isnan(drift_score) and drift_score > thresholds.drift_threshold
    failing = sorted(
        (d for d, n in class_errors.items() if n >= thresholds.fail_threshold), key=lambda d: (-class_errors[d], d)
    )
    reasons = [
        f"{new_labels} new labels since the last retraining "
        + (
            f"(at least {thresholds.min_new_labels} needed: enough)"
            if enough
            else f"(fewer than the {thresholds.min_new_labels} needed)"
        ),
        (
            "drift score not measured (no new drawings)"
            if math.isnan(drift_score)
            else f"drift score {drift_score:.3f} "
            + ("exceeds" if drifted else "does not exceed")
            + f" the threshold {thresholds.drift_threshold:g}"
        ),
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
