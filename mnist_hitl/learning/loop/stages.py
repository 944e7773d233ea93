"""The stages of a learning cycle: prepare (from the registry's champion, settling what an interrupted cycle
left, the label window), then the two notebooks, monitor and retrain, each in a nested MLflow run.

:mod:`mnist_hitl.learning.loop.cycle` runs them in order; each is a plain function of the settings, the
store and the cycle's plan, so the Prefect flow can run each as a task.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_hitl.config import Settings
from mnist_hitl.learning.loop.watermarks import advance_watermarks, newest_label_id, watermarks
from mnist_hitl.learning.monitor.decision import Thresholds
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

RUNNING_CYCLE = "loop.running_cycle"  # the store's note of the cycle between its first write and its end
MONITOR_NOTEBOOK = "monitor.ipynb"
RETRAIN_NOTEBOOK = "retrain.ipynb"


class CycleFailed(RuntimeError):
    """A stage of the cycle failed; the deployed model and the watermarks are unchanged."""


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


def prepare_cycle(settings: Settings, store: Store, cycle_id: str, force_retrain: bool) -> CyclePlan:
    """Start from the registry's champion (on a registry node), settle what an interrupted cycle left,
    then snapshot the watermarks and the newest label.

    Raises:
        CycleFailed: on a registry node, the registry's champion could not be fetched.
    """
    from mnist_hitl.learning.retrain import deployment

    changes = _start_from_registry(settings) if settings.model_source == "registry" else []
    changes += deployment.reconcile(settings, store)
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
    try:  # in a context of its own: jupyter_core keeps its event loop in a context variable, and a stage
        # run beside another (a thread started with a copy of that one's context) would find the other's, running
        contextvars.Context().run(
            papermill.execute_notebook,
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


def monitor_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    """Run ``monitor.ipynb`` on the plan's labels; returns its decision and its MLflow run."""
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


def retrain_stage(settings: Settings, plan: CyclePlan, parent_run: str, extra: dict) -> tuple[dict, str]:
    """Run ``retrain.ipynb`` through the plan's newest label; returns its result and its MLflow run."""

    def read(path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CycleFailed(f"the retrain notebook wrote no readable result at {path}: {error}") from error

    parameters = {**retrain_overrides(settings), **extra}
    return _notebook_stage(
        settings, plan, parent_run, RETRAIN_NOTEBOOK, ("result_path", "retrain_result.json"), parameters, read
    )
