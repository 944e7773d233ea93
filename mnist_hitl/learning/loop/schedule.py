"""The ``hitl-cycle`` Prefect flow and its schedule.

Each stage of :func:`mnist_hitl.learning.loop.cycle.run_cycle` runs as a Prefect task
(``prepare``, ``monitor``, ``retrain``, ``record``), so the Prefect UI shows the
cycle stage by stage; the logic itself lives in :mod:`mnist_hitl.learning.loop.cycle`.

    mnist-hitl schedule                   serve the flow on its schedule (starts a local Prefect server if none)
    MNIST_HITL_WORK_POOL=cycles mnist-hitl schedule
                                          deploy it to a work pool instead; `mnist-hitl worker`s run it
    python flows/hitl_cycle.py --once     run one cycle now as a flow run (ephemeral API if no server)
    mnist-hitl cycle                      one cycle without Prefect at all (scripts, tests)

The schedule is a cron every ``MNIST_HITL_CYCLE_MINUTES`` (60: ``0 * * * *``) or,
when cron cannot say it, an interval. Between those, a thread of the serving process
(:mod:`mnist_hitl.learning.loop.trigger`) creates a retraining run of the same deployment
once ``MNIST_HITL_RETRAIN_EVERY_LABELS`` labels have arrived since the last retraining.
Only one cycle runs at a time: the cycle's file lock makes a second one return
``busy`` at once, and the deployment also asks Prefect not to start a run while one
is active. The deployment's entrypoint is this module's import path, so the served
flow runs from an installed wheel too.

With ``MNIST_HITL_WORK_POOL`` set, the same deployment (name, schedule, parameters, one run
at a time) goes to a Prefect *process* work pool instead of being served: any machine
running ``mnist-hitl worker`` on that pool runs the cycles, each in a process of its own
(TensorFlow is imported there, never in the worker). The entrypoint stays the module path,
not a file: a worker's machine needs mnist-hitl installed, not this repository at the same
path. ``mnist-hitl schedule`` then keeps running for the label-count trigger, and, if it
started one, for the local Prefect server; stopping it leaves the deployment's schedule
active, since the server's scheduler and the workers run it without this process.
"""

from __future__ import annotations

import contextvars
import logging
import signal
import subprocess
import sys
import threading
from datetime import timedelta

from mnist_hitl import config
from mnist_hitl.clock import wait_for
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.loop import trigger
from mnist_hitl.learning.loop.cycle import run_cycle
from mnist_hitl.names import CycleOutcome

config.use_tool_environment(get_settings())  # before prefect is imported: it reads its settings once

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

log = logging.getLogger(__name__)

FLOW_NAME = "hitl-cycle"
DEPLOYMENT_NAME = "scheduled"
DESCRIPTION = "monitor the users' labels, retrain and promote when the monitor says so"


def cron_for(minutes: int) -> str | None:
    """A cron expression running every ``minutes``, or None when cron cannot say it (use an interval)."""
    if minutes <= 0:
        raise ValueError("the cycle interval must be positive")
    if minutes < 60 and 60 % minutes == 0:
        return f"*/{minutes} * * * *"
    if minutes % 60 == 0 and 1440 % minutes == 0:
        hours = minutes // 60
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    return None


def as_task(name: str, function, *args, **kwargs):
    """Run one stage of the cycle as a Prefect task (no caching, no retries: a stage is not idempotent)."""
    return task(function, name=name, cache_policy=NO_CACHE, retries=0, persist_result=False)(*args, **kwargs)


def as_task_beside(name: str, function, *args):
    """Start one stage of the cycle as a Prefect task on the flow's task runner (threads): a future."""
    return task(function, name=name, cache_policy=NO_CACHE, retries=0, persist_result=False).submit(*args)


@flow(name=FLOW_NAME, log_prints=True, persist_result=False)
def hitl_cycle(force_retrain: bool = False, retrain_params: dict | None = None) -> dict:
    """One learning cycle; returns the cycle's summary (outcome, decision and reasons, model, times)."""
    summary = run_cycle(
        force_retrain=force_retrain, retrain_params=retrain_params, runner=as_task, starter=as_task_beside
    )
    logger = get_run_logger()
    logger.info("cycle %s: %s", summary.get("cycle_id", "-"), summary["outcome"])
    for reason in summary.get("reasons", []) + summary.get("verdict_reasons", []):
        logger.info("  %s", reason)
    if summary["outcome"] == CycleOutcome.BUSY:
        logger.warning(summary["message"])
    return summary


def schedule_of(settings: Settings) -> dict:
    """The deployment's schedule: ``{"cron": ...}``, or ``{"interval": ...}`` when cron cannot say it."""
    cron = cron_for(settings.cycle_minutes)
    return {"cron": cron} if cron else {"interval": timedelta(minutes=settings.cycle_minutes)}


def _announce(settings: Settings, how: str) -> None:
    when = schedule_of(settings).get("cron", "interval")
    print(f"{how} {FLOW_NAME} every {settings.cycle_minutes} min ({when}) to {settings.prefect_api}", flush=True)
    print(
        f"and a retraining cycle whenever {settings.retrain_every_labels} new labels have arrived"
        " since the last retraining (checked every minute)",
        flush=True,
    )


def serve(settings: Settings) -> None:
    """Serve the flow to the Prefect server on the cycle's schedule, until interrupted."""
    from prefect.types.entrypoint import EntrypointType

    _announce(settings, "serving")
    stop = threading.Event()
    # A copy of this thread's context: the Prefect settings (the API URL) the caller set for it.
    watcher = threading.Thread(
        target=contextvars.copy_context().run,
        args=(trigger.watch, settings, request_cycle, 60, stop),
        name="label-count-trigger",
        daemon=True,
    )
    watcher.start()
    try:
        hitl_cycle.serve(
            name=DEPLOYMENT_NAME,
            limit=1,
            print_starting_message=False,
            description=DESCRIPTION,
            entrypoint_type=EntrypointType.MODULE_PATH,
            **schedule_of(settings),
        )
    finally:
        stop.set()


def deploy_to_work_pool(settings: Settings) -> object:
    """Create or update the cycle's deployment on the process work pool ``MNIST_HITL_WORK_POOL``.

    Creates the pool (type ``process``, Prefect's default job template) if it does not exist.

    Returns:
        The deployment's id.

    Raises:
        RuntimeError: a pool of that name exists and is not a process pool.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.types.entrypoint import EntrypointType
    from prefect.workers.process import ProcessWorker

    pool = settings.work_pool
    with get_client(sync_client=True) as client:
        try:
            kind = client.read_work_pool(pool).type
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            kind = client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template)).type
    if kind != "process":
        raise RuntimeError(f"work pool {pool!r} is a {kind} pool: MNIST_HITL_WORK_POOL must name a process pool")
    deployment = hitl_cycle.to_deployment(
        name=DEPLOYMENT_NAME,
        concurrency_limit=1,  # one cycle at a time, whichever worker runs it (the served flow: limit=1)
        paused=False,  # a deployment served before was paused when its server process stopped
        description=DESCRIPTION,
        entrypoint_type=EntrypointType.MODULE_PATH,
        **schedule_of(settings),
    )
    return deployment.apply(work_pool_name=pool)


def watch_labels(settings: Settings) -> None:
    """Run the label-count trigger in this thread until SIGINT or SIGTERM (the work-pool scheduler's job)."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        trigger.watch(settings, request_cycle, 60, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def request_cycle(reason: str) -> object:
    """Create a run of the cycle's deployment (served, or on the work pool), retraining whatever the monitor says."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        f"{FLOW_NAME}/{DEPLOYMENT_NAME}", parameters={"force_retrain": True}, timeout=0, tags=["labels"]
    )
    print(f"{reason}: asked for flow run {run.name}", flush=True)
    return run


def serve_schedule(settings: Settings | None = None) -> None:
    """Serve the ``hitl-cycle`` flow on its schedule (every ``MNIST_HITL_CYCLE_MINUTES``), until interrupted.

    Uses the Prefect server at ``PREFECT_API_URL`` (default: the local one on
    ``MNIST_HITL_PREFECT_PORT``). When that is the default and nothing answers,
    starts one (``mnist-hitl prefect-server``, SQLite under ``$MNIST_HITL_HOME/prefect``)
    and stops it on exit, Ctrl-C included. With ``MNIST_HITL_WORK_POOL`` set, deploys the
    flow to that pool (:func:`deploy_to_work_pool`) and keeps only the label-count trigger
    running here; the pool's workers run the cycles.
    """
    settings = settings or get_settings()
    config.use_tool_environment(settings, prefect_server=True)
    api = settings.prefect_api
    health = f"{api.rstrip('/')}/health"
    server = None
    try:
        if not wait_for(health, timeout=30 if settings.prefect_api_url else 1):
            if settings.prefect_api_url:
                raise RuntimeError(f"no Prefect server answers at {api}: start one with `mnist-hitl prefect-server`")
            server = _start_server(settings, health)
        # Prefect read PREFECT_API_URL when it was imported; without this, the flow would be served to a
        # temporary server of its own, in this process group (sharing the database file, so it seemed to
        # work), which Ctrl-C stopped before the flow had paused its deployment: then it waited for ever.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            if settings.work_pool:
                deployment_id = deploy_to_work_pool(settings)
                _announce(settings, f"deployed (id {deployment_id}) to work pool {settings.work_pool!r}:")
                watch_labels(settings)  # returns on Ctrl-C or SIGTERM; the deployment stays scheduled
            else:
                serve(settings)  # returns on Ctrl-C or SIGTERM, once the deployment is paused
    finally:
        if server is not None:
            _stop_server(server)


def _start_server(settings: Settings, health: str) -> subprocess.Popen:
    """Start a local Prefect server and wait until it answers.

    It runs in a session of its own, so that the Ctrl-C meant for this process does not
    stop it before the flow has paused its deployment; :func:`_stop_server` stops it after.
    """
    log_path = settings.prefect_home / "server.log"
    with open(log_path, "ab") as server_log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mnist_hitl.cli",
                "prefect-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.prefect_port),
            ],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=config.child_environment(settings),
        )
    try:
        ready = wait_for(health, timeout=120)
    except BaseException:  # Ctrl-C while it starts
        _stop_server(server)
        raise
    if not ready:
        _stop_server(server)
        raise RuntimeError(f"the Prefect server did not start; see {log_path}")
    return server


def _stop_server(server: subprocess.Popen) -> None:
    """SIGTERM (the server stops its services, then exits), SIGKILL if it takes over 10 s or on a second Ctrl-C."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> None:
    """``--once [--force-retrain]``: one cycle now as a flow run; otherwise serve the schedule."""
    argv = sys.argv[1:] if argv is None else argv
    if "--once" in argv:
        print(hitl_cycle(force_retrain="--force-retrain" in argv))
    else:
        serve_schedule()
