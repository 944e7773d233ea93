"""What a cycle leaves behind: the watermarks advanced, its MLflow run closed with a description and the
team's agreement figures, and its summary remembered in the store (:func:`last_cycle`).

The watermarks advance only here, at the very end of a complete cycle, so a cycle that dies counts its
labels again next time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from mnist_hitl.config import Settings
from mnist_hitl.files import json_default, write_json
from mnist_hitl.learning.loop.stages import RUNNING_CYCLE, CyclePlan
from mnist_hitl.learning.loop.watermarks import advance_watermarks
from mnist_hitl.names import CycleOutcome
from mnist_hitl.store import Store
from mnist_hitl.workbench.agreement import agreement, agreement_metrics, team_figures

log = logging.getLogger(__name__)

LAST_CYCLE = "loop.last_cycle"


def number_or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def record_cycle(
    settings: Settings, store: Store, plan: CyclePlan, summary: dict, retrain_result: dict | None, parent
) -> None:
    """Advance the watermarks and close the parent run: the cycle is complete."""
    from mnist_hitl.learning import tracking

    retrained = retrain_result["through_label_id"] if retrain_result else None
    marks = advance_watermarks(store, plan.through_label_id, retrained)
    store.set_meta(RUNNING_CYCLE, "")
    summary["watermarks"] = asdict(marks)
    parent.metrics(
        {
            "new_labels": summary.get("new_labels"),
            "drift_score": number_or_nan(summary.get("drift_score")),
            "retrain": int(bool(retrain_result)),
            "promoted": int(bool(summary.get("promoted"))),
        }
    )
    record_agreement(settings, store, parent)
    parent.tags(
        {
            "outcome": summary["outcome"],
            "decision": "retrain" if summary.get("decision") else "no retrain",
            "reasons": "\n".join(summary.get("reasons", [])),
            tracking.NOTE_TAG: cycle_note(summary),
            **({"model_version": summary["model_version"]} if summary.get("model_version") else {}),
        }
    )
    tracking.end_run(settings, parent.run_id, "FINISHED")


def record_agreement(settings: Settings, store: Store, parent) -> dict:
    """Log the team's agreement (:mod:`mnist_hitl.workbench.agreement`) to the cycle's run: alpha and each
    pair's kappa as metrics, every figure as ``agreement.json``; and write what the metrics exporter serves
    of it (:attr:`~mnist_hitl.config.Settings.team_figures_path`)."""
    history = store.labels()
    figures = agreement(history)
    parent.metrics(agreement_metrics(figures))
    parent.json(figures, "agreement.json")
    write_json(settings.team_figures_path, team_figures(history))
    return figures


def cycle_note(summary: dict) -> str:
    """The cycle run's description: how it ended, the decision's reasons and, after a retraining, the verdict's."""
    from mnist_hitl.learning.tracking import note

    version = f" ({summary['model_version']})" if summary.get("model_version") else ""
    reasons = [
        *summary.get("reasons", []),
        *(f"verdict: {r}" for r in summary.get("verdict_reasons") or []),
        *(summary[k] for k in ("message", "error") if summary.get(k)),
    ]
    return note(f"Cycle {summary['cycle_id']}: {summary['outcome'].replace('_', ' ')}{version}", reasons)


def record_quiet_cycle(settings: Settings, plan: CyclePlan, summary: dict) -> None:
    """A cycle with nothing new: one short MLflow run saying so, and the store's note."""
    from mnist_hitl.learning import tracking

    try:
        run_id = tracking.start_run(
            settings,
            f"cycle {plan.cycle_id}",
            "cycle",
            plan.cycle_id,
            tags={
                "outcome": CycleOutcome.NO_NEW_DATA.value,
                "reasons": summary["message"],
                tracking.NOTE_TAG: cycle_note(summary),
            },
        )
        tracking.RunLog(settings, run_id).metrics({"new_labels": 0})
        tracking.end_run(settings, run_id, "FINISHED")
        summary["mlflow_run_id"] = run_id
    except Exception as error:  # an unreachable tracking server must not fail a cycle that does nothing
        log.warning("could not record the quiet cycle in MLflow: %s", error)


def remember(store: Store, summary: dict) -> None:
    """Keep a cycle's summary in the store, for :func:`last_cycle`."""
    store.set_meta(LAST_CYCLE, json.dumps(summary, default=json_default))


def last_cycle(store: Store) -> dict | None:
    """The summary of the last cycle that ran to an end (or failed), from the store."""
    text = store.get_meta(LAST_CYCLE)
    return json.loads(text) if text else None
