"""The ``hitl-cycle`` Prefect flow: monitor, decide, retrain when asked, record.

Each stage of :func:`mnist_hitl.loop.run_cycle` runs as a Prefect task
(``prepare``, ``monitor``, ``retrain``, ``record``), so the Prefect UI shows the
cycle stage by stage; the logic itself lives in the library.

    python flows/hitl_cycle.py            serve the flow on its schedule (needs a Prefect server)
    python flows/hitl_cycle.py --once     run one cycle now as a flow run (ephemeral API if no server)
    mnist-hitl schedule                   the same as the first line
    mnist-hitl cycle                      one cycle without Prefect at all (scripts, tests)

The schedule is a cron every ``MNIST_HITL_CYCLE_MINUTES`` (60: ``0 * * * *``) or,
when cron cannot say it, an interval. Only one cycle runs at a time: the cycle's
file lock makes a second one return ``busy`` at once, and the deployment also
asks Prefect not to start a run while one is active.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta

from mnist_hitl import loop
from mnist_hitl.config import Settings, get_settings

loop.configure_prefect(get_settings())  # before prefect is imported: it reads its settings once

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

FLOW_NAME = "hitl-cycle"
DEPLOYMENT_NAME = "scheduled"


def as_task(name: str, function, *args, **kwargs):
    """Run one stage of the cycle as a Prefect task (no caching, no retries: a stage is not idempotent)."""
    return task(function, name=name, cache_policy=NO_CACHE, retries=0, persist_result=False)(*args, **kwargs)


@flow(name=FLOW_NAME, log_prints=True, persist_result=False)
def hitl_cycle(force_retrain: bool = False, retrain_params: dict | None = None) -> dict:
    """One learning cycle; returns the cycle's summary (outcome, decision and reasons, model, times)."""
    summary = loop.run_cycle(force_retrain=force_retrain, retrain_params=retrain_params, runner=as_task)
    logger = get_run_logger()
    logger.info("cycle %s: %s", summary.get("cycle_id", "-"), summary["outcome"])
    for reason in summary.get("reasons", []) + summary.get("verdict_reasons", []):
        logger.info("  %s", reason)
    if summary["outcome"] == "busy":
        logger.warning(summary["message"])
    return summary


def serve(settings: Settings | None = None) -> None:
    """Serve the flow to the Prefect server on the cycle's schedule, until interrupted."""
    settings = settings or get_settings()
    minutes = settings.cycle_minutes
    cron = loop.cron_for(minutes)
    schedule = {"cron": cron} if cron else {"interval": timedelta(minutes=minutes)}
    print(f"serving {FLOW_NAME} every {minutes} min ({cron or 'interval'}) to {os.environ.get('PREFECT_API_URL')}",
          flush=True)
    hitl_cycle.serve(name=DEPLOYMENT_NAME, limit=1, print_starting_message=False,
                     description="monitor the users' labels, retrain and promote when the monitor says so",
                     **schedule)


if __name__ == "__main__":
    if "--once" in sys.argv[1:]:
        print(hitl_cycle(force_retrain="--force-retrain" in sys.argv[1:]))
    else:
        loop.serve_schedule()
