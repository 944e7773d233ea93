"""The learning cycle: monitor the users' labels, decide, retrain, promote, record.

One cycle:

1. **prepare** — take the cycle lock (:mod:`mnist_hitl.learning.loop.lock`); on a node
   with ``MNIST_HITL_MODEL_SOURCE=registry`` (no shared disk) fetch the registry's
   champion first (:func:`mnist_hitl.model.follow.sync_from_registry`: its export and its
   Keras file), so the cycle learns from the champion whichever node last promoted one;
   settle what an interrupted cycle left (:func:`mnist_hitl.learning.retrain.deployment.reconcile`),
   and snapshot the label ids: ``since`` (labels already used by the last
   retraining), ``seen`` (labels already looked at by the last completed cycle)
   and ``through`` (the newest label now). Nothing newer than ``seen``: the
   cycle records that and stops.
2. **monitor** — ``notebooks/monitor.ipynb`` (papermill) looks at the labels in
   (since, through]: per-class errors, drift, and writes the decision as JSON.
3. **retrain** — when the decision (or ``force_retrain``) says so,
   ``notebooks/retrain.ipynb`` runs the Optuna search, trains the challenger,
   compares it with the champion and promotes or rejects it.
4. **record** — the watermarks advance (only now, so a cycle that dies counts
   its labels again next time), the MLflow runs are closed, metrics published.

The retrain decision counts the labels since the last retraining, so labels
that trickle in across several quiet cycles add up.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.clock import Stopwatch
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.files import json_default
from mnist_hitl.learning.loop.lock import CycleBusy, cycle_lock
from mnist_hitl.learning.loop.watermarks import advance_watermarks, newest_label_id, watermarks
from mnist_hitl.learning.monitor.decision import Thresholds
from mnist_hitl.names import CycleOutcome
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

LAST_CYCLE = "loop.last_cycle"
RUNNING_CYCLE = "loop.running_cycle"
MONITOR_NOTEBOOK = "monitor.ipynb"
RETRAIN_NOTEBOOK = "retrain.ipynb"

Runner = Callable[..., object]


class CycleFailed(RuntimeError):
    """A stage of the cycle failed; the deployed model and the watermarks are unchanged."""


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


# prepare ------------------------------------------------------------------------------------


def prepare_cycle(settings: Settings, cycle_id: str, force_retrain: bool) -> CyclePlan:
    """Start from the registry's champion (on a registry node), settle what an interrupted cycle left,
    then snapshot the watermarks and the newest label.

    Raises:
        CycleFailed: on a registry node, the registry's champion could not be fetched.
    """
    from mnist_hitl.learning.retrain import deployment

    changes = _start_from_registry(settings) if settings.model_source == "registry" else []
    changes += deployment.reconcile(settings)
    with Store(settings.store_location) as store:
        interrupted = store.get_meta(RUNNING_CYCLE)
        if interrupted:
            changes.append(f"cycle {interrupted} was interrupted")
            changes += _settle_interrupted(settings, store, interrupted)
            store.set_meta(RUNNING_CYCLE, "")
        marks = watermarks(store)
        through = newest_label_id(store)
    run_dir = settings.runs_dir / f"cycle-{cycle_id}"
    return CyclePlan(cycle_id, marks.retrained_through, marks.seen_through, through, force_retrain, run_dir, changes)


def _start_from_registry(settings: Settings) -> list[str]:
    """Serve the registry's champion here, Keras file included: a cycle node shares no disk with the node that
    promoted it. Failing is better than retraining from (and judging against) an older champion."""
    from mnist_hitl.model import ModelFileError
    from mnist_hitl.model.follow import RegistryError, sync_from_registry

    try:
        version = sync_from_registry(settings)
    except (RegistryError, ModelFileError) as error:
        raise CycleFailed(f"cannot start from the registry's champion: {error}") from error
    return [f"fetched the registry's champion {version}"] if version else []


def _settle_interrupted(settings: Settings, store: Store, cycle_id: str) -> list[str]:
    """An interrupted cycle's retraining that finished still counts; its MLflow runs are closed."""
    from mnist_hitl.learning import tracking
    from mnist_hitl.model import ModelFileError, deployed_model

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


# the notebook stages --------------------------------------------------------------------------


def run_notebook(settings: Settings, name: str, output: Path, parameters: dict) -> Path:
    """Execute one of the loop's notebooks with papermill; the executed copy is written even on failure.

    Raises:
        CycleFailed: a cell raised; the message names the executed notebook to read.
    """
    import papermill

    source = settings.notebooks_dir / name
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(output.parent),
            request_save_on_cell_execute=False,
        )
    except papermill.PapermillExecutionError as error:
        raise CycleFailed(f"{name} failed ({error.ename}: {error.evalue}); see {output}") from error
    return output


def retrain_overrides(settings: Settings) -> dict:
    """The retraining parameters the settings give (``MNIST_HITL_TRIALS``...)."""
    return {
        "n_trials": settings.n_trials,
        "epochs_per_trial": settings.epochs_per_trial,
        "final_epochs": settings.final_epochs,
        "oversample": settings.oversample,
    }


def _notebook_stage(
    settings: Settings,
    plan: CyclePlan,
    parent_run: str,
    notebook: str,
    result: tuple[str, str],
    parameters: dict,
    read: Callable[[Path], dict],
) -> tuple[dict, str]:
    """Run one notebook in its own nested MLflow run; log the executed notebook whatever happens."""
    from mnist_hitl.learning import tracking

    kind = notebook.removesuffix(".ipynb")
    run_id = tracking.start_run(settings, kind, kind, plan.cycle_id, parent_run)
    result_parameter, result_name = result
    output, result_path = plan.run_dir / notebook, plan.run_dir / result_name
    status = "FAILED"
    try:
        run_notebook(
            settings,
            notebook,
            output,
            {
                "home": str(settings.home),
                "tracking_uri": settings.tracking_uri,
                "mlflow_run_id": run_id,
                "cycle_id": plan.cycle_id,
                "through_label_id": plan.through_label_id,
                "output_dir": str(plan.run_dir),
                result_parameter: str(result_path),
                **parameters,
            },
        )
        found = read(result_path)
        status = "FINISHED"
        return found, run_id
    finally:
        from mnist_hitl.learning.loop.notebooks import html_copy

        run_log = tracking.RunLog(settings, run_id)
        for path in (output, html_copy(output)):  # the HTML copy: MLflow's artifact view shows no .ipynb
            if path:
                run_log.artifact(path, "notebooks")
        tracking.end_run(settings, run_id, status)


def _monitor_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    from mnist_hitl.learning.monitor.monitoring import DecisionError, read_decision

    def read(path: Path) -> dict:
        try:
            return read_decision(path)
        except DecisionError as error:
            raise CycleFailed(str(error)) from error

    parameters = {"since_label_id": plan.since_label_id, **asdict(Thresholds.from_settings(settings)), **extra}
    return _notebook_stage(
        settings, plan, parent_run, MONITOR_NOTEBOOK, ("decision_path", "decision.json"), parameters, read
    )


def _retrain_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CycleFailed(f"the retrain notebook wrote no readable result at {path}: {error}") from error

    parameters = {**retrain_overrides(settings), **extra}
    return _notebook_stage(
        settings, plan, parent_run, RETRAIN_NOTEBOOK, ("result_path", "retrain_result.json"), parameters, read
    )


# the cycle -------------------------------------------------------------------------------------


def run_cycle(
    force_retrain: bool = False,
    settings: Settings | None = None,
    *,
    monitor_params: dict | None = None,
    retrain_params: dict | None = None,
    runner: Runner | None = None,
) -> dict:
    """Run one learning cycle now, in this process (no Prefect server needed).

    Args:
        force_retrain: retrain whatever the monitor decides (the monitor still runs and is recorded).
        settings: defaults to the environment's settings.
        monitor_params: extra papermill parameters of the monitor notebook (e.g. ``reference_size``).
        retrain_params: extra papermill parameters of the retrain notebook (``n_trials``,
            ``epochs_per_trial``, ``final_epochs``, ``oversample``...); the settings
            ``MNIST_HITL_TRIALS``, ``MNIST_HITL_EPOCHS_PER_TRIAL``, ``MNIST_HITL_FINAL_EPOCHS``
            and ``MNIST_HITL_OVERSAMPLE`` set them too.
        runner: how each stage is called, ``runner(name, function, *args)``; the Prefect flow
            passes one that runs each stage as a task.

    Returns:
        A summary: ``outcome`` (a :class:`CycleOutcome`), the decision and its reasons, the
        model version, the stage times.

    Raises:
        CycleFailed: a stage failed; the deployed model and the watermarks are unchanged.
    """
    settings = settings or get_settings()
    try:
        with cycle_lock(settings) as cycle_id:
            return _Cycle(settings, cycle_id, runner or _direct).run(
                force_retrain, monitor_params or {}, retrain_params or {}
            )
    except CycleBusy as busy:
        log.warning("%s", busy)
        metrics.record_cycle(CycleOutcome.BUSY)
        return {"outcome": CycleOutcome.BUSY.value, "message": str(busy)}


class _Cycle:
    """One cycle's run: its stages timed, its summary built, closed the same way however it ends."""

    def __init__(self, settings: Settings, cycle_id: str, call: Runner) -> None:
        self.settings, self.cycle_id, self.call = settings, cycle_id, call
        self.clock = Stopwatch()
        self.summary: dict = {"cycle_id": cycle_id}

    def stage(self, name: str, function: Callable, *args):
        with self.clock(name):
            return self.call(name, function, *args)

    def run(self, force_retrain: bool, monitor_params: dict, retrain_params: dict) -> dict:
        with self.clock("total"):
            try:
                plan: CyclePlan = self.stage("prepare", prepare_cycle, self.settings, self.cycle_id, force_retrain)
            except CycleFailed as error:  # e.g. the registry's champion out of reach: said, counted, remembered
                self.summary.update(outcome=CycleOutcome.FAILED.value, error=str(error))
                self.close()
                raise
            self.summary.update(
                force_retrain=force_retrain,
                since_label_id=plan.since_label_id,
                through_label_id=plan.through_label_id,
                reconciled=plan.reconciled,
            )
            if not plan.has_new_labels and not force_retrain:
                self.summary.update(
                    outcome=CycleOutcome.NO_NEW_DATA.value,
                    message=f"no label newer than {plan.seen_through} since the last cycle: nothing to do",
                )
                self.stage("record", _record_quiet_cycle, self.settings, plan, self.summary)
            else:
                self.learn(plan, monitor_params, retrain_params)
        return self.close()

    def learn(self, plan: CyclePlan, monitor_params: dict, retrain_params: dict) -> None:
        from mnist_hitl.learning import tracking

        settings = self.settings
        with Store(settings.store_location) as store:
            store.set_meta(RUNNING_CYCLE, self.cycle_id)  # first: a cycle killed from here on is settled by the next
        parent_run = tracking.start_run(
            settings, f"cycle {self.cycle_id}", "cycle", self.cycle_id, tags={"force_retrain": str(plan.force_retrain)}
        )
        self.summary["mlflow_run_id"] = parent_run
        parent = tracking.RunLog(settings, parent_run)
        try:
            parent.params(
                {
                    "force_retrain": plan.force_retrain,
                    **asdict(Thresholds.from_settings(settings)),
                    "since_label_id": plan.since_label_id,
                    "seen_through": plan.seen_through,
                    "through_label_id": plan.through_label_id,
                    **{f"retrain.{k}": v for k, v in {**retrain_overrides(settings), **retrain_params}.items()},
                }
            )
            retrain_result = self.decide_and_retrain(plan, parent_run, monitor_params, retrain_params)
            self.stage("record", _record_cycle, settings, plan, self.summary, retrain_result, parent)
        except BaseException as error:
            self.fail(error, parent)
            if isinstance(error, Exception) and not isinstance(error, CycleFailed):
                raise CycleFailed(f"cycle {self.cycle_id} failed: {self.summary['error']}") from error
            raise
        with contextlib.suppress(Exception):
            parent.metrics({f"seconds_{k}": v for k, v in self.clock.seconds.items()})
            parent.json(self.summary, "cycle_summary.json")

    def decide_and_retrain(
        self, plan: CyclePlan, parent_run: str, monitor_params: dict, retrain_params: dict
    ) -> dict | None:
        summary = self.summary
        decision, monitor_run = self.stage("monitor", _monitor_stage, self.settings, plan, parent_run, monitor_params)
        summary.update(
            decision=decision["retrain"],
            reasons=decision["reasons"],
            new_labels=decision["new_labels"],
            drift_score=decision.get("drift_score"),
            monitor_run_id=monitor_run,
        )
        metrics.record_monitor(
            _number(decision.get("drift_score")),
            {int(k): float(v) for k, v in decision.get("class_error_rates", {}).items()},
            int(decision["new_labels"]),
        )
        if not (plan.force_retrain or decision["retrain"]):
            summary["outcome"] = CycleOutcome.NO_RETRAIN.value
            return None
        if not decision["retrain"]:
            summary["reasons"] = [*decision["reasons"], "retraining anyway: --force-retrain"]
        result, retrain_run = self.stage("retrain", _retrain_stage, self.settings, plan, parent_run, retrain_params)
        promoted = result["status"] == "deployed"
        summary.update(
            retrain_run_id=retrain_run,
            model_version=result["version"],
            mlflow_model_version=result.get("mlflow_model_version"),
            promoted=promoted,
            verdict_reasons=result["reasons"],
            scores=result["comparison"],
            retrain_seconds=result.get("seconds"),
            outcome=(CycleOutcome.PROMOTED if promoted else CycleOutcome.REJECTED).value,
        )
        return result

    def fail(self, error: BaseException, parent) -> None:
        from mnist_hitl.learning import tracking

        self.summary.update(outcome=CycleOutcome.FAILED.value, error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            parent.tags(
                {
                    "outcome": "failed",
                    "error": self.summary["error"][:4000],
                    tracking.NOTE_TAG: _cycle_note(self.summary),
                }
            )
            tracking.end_run(self.settings, parent.run_id, "FAILED" if isinstance(error, Exception) else "KILLED")
        with contextlib.suppress(Exception), Store(self.settings.store_location) as store:
            store.set_meta(RUNNING_CYCLE, "")
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> dict:
        """Remember the summary in the store and count the outcome: the same for every ending."""
        self.summary["seconds"] = dict(self.clock.seconds)
        _remember(self.settings, self.summary)
        metrics.record_cycle(self.summary["outcome"])
        return self.summary


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _record_cycle(settings: Settings, plan: CyclePlan, summary: dict, retrain_result: dict | None, parent) -> None:
    """Advance the watermarks and close the parent run: the cycle is complete."""
    from mnist_hitl.learning import tracking

    with Store(settings.store_location) as store:
        retrained = retrain_result["through_label_id"] if retrain_result else None
        marks = advance_watermarks(store, plan.through_label_id, retrained)
        store.set_meta(RUNNING_CYCLE, "")
    summary["watermarks"] = asdict(marks)
    parent.metrics(
        {
            "new_labels": summary.get("new_labels"),
            "drift_score": _number(summary.get("drift_score")),
            "retrain": int(bool(retrain_result)),
            "promoted": int(bool(summary.get("promoted"))),
        }
    )
    parent.tags(
        {
            "outcome": summary["outcome"],
            "decision": "retrain" if summary.get("decision") else "no retrain",
            "reasons": "\n".join(summary.get("reasons", [])),
            tracking.NOTE_TAG: _cycle_note(summary),
            **({"model_version": summary["model_version"]} if summary.get("model_version") else {}),
        }
    )
    tracking.end_run(settings, parent.run_id, "FINISHED")


def _cycle_note(summary: dict) -> str:
    """The cycle run's description: how it ended, the decision's reasons and, after a retraining, the verdict's."""
    from mnist_hitl.learning.tracking import note

    version = f" ({summary['model_version']})" if summary.get("model_version") else ""
    reasons = [
        *summary.get("reasons", []),
        *(f"verdict: {r}" for r in summary.get("verdict_reasons") or []),
        *(summary[k] for k in ("message", "error") if summary.get(k)),
    ]
    return note(f"Cycle {summary['cycle_id']}: {summary['outcome'].replace('_', ' ')}{version}", reasons)


def _record_quiet_cycle(settings: Settings, plan: CyclePlan, summary: dict) -> None:
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
                tracking.NOTE_TAG: _cycle_note(summary),
            },
        )
        tracking.RunLog(settings, run_id).metrics({"new_labels": 0})
        tracking.end_run(settings, run_id, "FINISHED")
        summary["mlflow_run_id"] = run_id
    except Exception as error:  # an unreachable tracking server must not fail a cycle that does nothing
        log.warning("could not record the quiet cycle in MLflow: %s", error)


def _remember(settings: Settings, summary: dict) -> None:
    with Store(settings.store_location) as store:
        store.set_meta(LAST_CYCLE, json.dumps(summary, default=json_default))


def last_cycle(settings: Settings | None = None) -> dict | None:
    """The summary of the last cycle that ran to an end (or failed), from the store."""
    settings = settings or get_settings()
    with Store(settings.store_location) as store:
        text = store.get_meta(LAST_CYCLE)
    return json.loads(text) if text else None
