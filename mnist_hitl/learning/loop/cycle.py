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
   compares it with the champion and promotes or rejects it. With ``force_retrain``
   (the cycle people's labels ask for) nothing waits for the decision, so the monitor
   runs beside the retraining, in a thread of its own: on two cores its imports and
   report take little from the training, and the new model comes that much sooner.
4. **record** — the watermarks advance (only now, so a cycle that dies counts
   its labels again next time), the MLflow runs are closed, metrics published.

The retrain decision counts the labels since the last retraining, so labels
that trickle in across several quiet cycles add up. The stages are in
:mod:`mnist_hitl.learning.loop.stages`, what a cycle leaves behind in
:mod:`mnist_hitl.learning.loop.record`; this module runs them in order, with one store.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict

from mnist_hitl import metrics
from mnist_hitl.clock import Stopwatch
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.loop.lock import CycleBusy, cycle_lock
from mnist_hitl.learning.loop.record import (
    LAST_CYCLE,
    cycle_note,
    last_cycle,
    number_or_nan,
    record_cycle,
    record_quiet_cycle,
    remember,
)
from mnist_hitl.learning.loop.stages import (
    RUNNING_CYCLE,
    CycleFailed,
    CyclePlan,
    monitor_stage,
    prepare_cycle,
    retrain_overrides,
    retrain_stage,
)
from mnist_hitl.learning.monitor.decision import Thresholds
from mnist_hitl.names import CycleOutcome
from mnist_hitl.store import Store, open_store

__all__ = ["LAST_CYCLE", "RUNNING_CYCLE", "CycleFailed", "CyclePlan", "last_cycle", "prepare_cycle", "run_cycle"]

log = logging.getLogger(__name__)

Runner = Callable[..., object]
MONITOR_WAIT_SECONDS = 120  # how long a failed forced cycle waits for the monitor beside it
MONITOR_NICENESS_BESIDE = 10  # the monitor beside a retraining uses the cores the training leaves idle


def _direct(name: str, function: Callable, *args, **kwargs):
    return function(*args, **kwargs)


def _in_a_thread(name: str, function: Callable, *args) -> Future:
    """Start ``function(*args)`` in a thread of its own (with this context); ``.result()`` waits for it."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cycle-{name}")
    try:
        return pool.submit(contextvars.copy_context().run, function, *args)
    finally:
        pool.shutdown(wait=False)


def run_cycle(
    force_retrain: bool = False,
    settings: Settings | None = None,
    *,
    monitor_params: dict | None = None,
    retrain_params: dict | None = None,
    runner: Runner | None = None,
    starter: Runner | None = None,
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
        starter: how a stage is started beside another (the monitor of a forced cycle),
            ``starter(name, function, *args)`` returning what ``.result()`` waits for; default: a thread.

    Returns:
        A summary: ``outcome`` (a :class:`CycleOutcome`), the decision and its reasons, the
        model version, the stage times.

    Raises:
        CycleFailed: a stage failed; the deployed model and the watermarks are unchanged.
    """
    settings = settings or get_settings()
    try:
        with cycle_lock(settings) as cycle_id, open_store(settings) as store:
            return _Cycle(settings, store, cycle_id, runner or _direct, starter or _in_a_thread).run(
                force_retrain, monitor_params or {}, retrain_params or {}
            )
    except CycleBusy as busy:
        log.warning("%s", busy)
        metrics.record_cycle(CycleOutcome.BUSY)
        return {"outcome": CycleOutcome.BUSY.value, "message": str(busy)}


class _Cycle:
    """One cycle's run: its stages timed, its summary built, closed the same way however it ends."""

    def __init__(self, settings: Settings, store: Store, cycle_id: str, call: Runner, start: Runner) -> None:
        self.settings, self.store, self.cycle_id, self.call, self.start = settings, store, cycle_id, call, start
        self.clock = Stopwatch()
        self.summary: dict = {"cycle_id": cycle_id}

    def stage(self, name: str, function: Callable, *args):
        with self.clock(name):
            return self.call(name, function, *args)

    def stage_beside(self, name: str, function: Callable, *args):
        """Start a stage that runs beside the next ones; ``.result()`` waits for it (timed in its own thread)."""
        return self.start(name, self.clock.call, name, function, *args)

    def run(self, force_retrain: bool, monitor_params: dict, retrain_params: dict) -> dict:
        with self.clock("total"):
            try:
                plan: CyclePlan = self.stage(
                    "prepare", prepare_cycle, self.settings, self.store, self.cycle_id, force_retrain
                )
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
                self.stage("record", record_quiet_cycle, self.settings, plan, self.summary)
            else:
                self.learn(plan, monitor_params, retrain_params)
        return self.close()

    def learn(self, plan: CyclePlan, monitor_params: dict, retrain_params: dict) -> None:
        from mnist_hitl.learning import tracking

        settings = self.settings
        self.store.set_meta(RUNNING_CYCLE, self.cycle_id)  # first: a cycle killed from here on is settled by the next
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
            self.stage("record", record_cycle, settings, self.store, plan, self.summary, retrain_result, parent)
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
        if plan.force_retrain:  # the retraining waits for no decision: the monitor runs beside it, giving way
            monitor_params = {"niceness": MONITOR_NICENESS_BESIDE, **monitor_params}
        monitor_args = (self.settings, plan, parent_run, monitor_params)
        retrain_args = (self.settings, plan, parent_run, retrain_params)
        if plan.force_retrain:
            monitoring = self.stage_beside("monitor", monitor_stage, *monitor_args)
            try:
                retrained = self.stage("retrain", retrain_stage, *retrain_args)
            except BaseException:
                with contextlib.suppress(Exception):  # its run closed before the cycle's, if it ends soon
                    monitoring.result(timeout=MONITOR_WAIT_SECONDS)
                raise
            self.note_decision(*monitoring.result())
            self.note_retraining(*retrained)
            return retrained[0]
        decision = self.note_decision(*self.stage("monitor", monitor_stage, *monitor_args))
        if not decision["retrain"]:
            self.summary["outcome"] = CycleOutcome.NO_RETRAIN.value
            return None
        result, retrain_run = self.stage("retrain", retrain_stage, *retrain_args)
        self.note_retraining(result, retrain_run)
        return result

    def note_decision(self, decision: dict, monitor_run: str) -> dict:
        """The monitor's decision into the summary and the metrics."""
        summary = self.summary
        summary.update(
            decision=decision["retrain"],
            reasons=decision["reasons"],
            new_labels=decision["new_labels"],
            drift_score=decision.get("drift_score"),
            monitor_run_id=monitor_run,
        )
        metrics.record_monitor(
            number_or_nan(decision.get("drift_score")),
            {int(k): float(v) for k, v in decision.get("class_error_rates", {}).items()},
            int(decision["new_labels"]),
        )
        if not decision["retrain"] and self.summary.get("force_retrain"):
            summary["reasons"] = [*decision["reasons"], "retraining anyway: --force-retrain"]
        return decision

    def note_retraining(self, result: dict, retrain_run: str) -> None:
        """The retraining's result into the summary."""
        promoted = result["status"] == "deployed"
        self.summary.update(
            retrain_run_id=retrain_run,
            model_version=result["version"],
            mlflow_model_version=result.get("mlflow_model_version"),
            promoted=promoted,
            verdict_reasons=result["reasons"],
            scores=result["comparison"],
            retrain_seconds=result.get("seconds"),
            outcome=(CycleOutcome.PROMOTED if promoted else CycleOutcome.REJECTED).value,
        )

    def fail(self, error: BaseException, parent) -> None:
        from mnist_hitl.learning import tracking

        self.summary.update(outcome=CycleOutcome.FAILED.value, error=f"{type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            parent.tags(
                {
                    "outcome": "failed",
                    "error": self.summary["error"][:4000],
                    tracking.NOTE_TAG: cycle_note(self.summary),
                }
            )
            tracking.end_run(self.settings, parent.run_id, "FAILED" if isinstance(error, Exception) else "KILLED")
        with contextlib.suppress(Exception):
            self.store.set_meta(RUNNING_CYCLE, "")
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> dict:
        """Remember the summary in the store and count the outcome: the same for every ending."""
        self.summary["seconds"] = dict(self.clock.seconds)
        remember(self.store, self.summary)
        metrics.record_cycle(self.summary["outcome"])
        return self.summary
