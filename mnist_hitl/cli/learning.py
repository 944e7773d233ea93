"""The learning loop's commands: the first model, one cycle now, the schedule, and the workers beside it.

``init`` and ``cycle`` import TensorFlow (inside the command); ``schedule`` and ``worker`` do not: the
cycles they start run in processes of their own.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from mnist_hitl.cli.errors import fail

commands = typer.Typer()


@commands.command()
def init(
    force: Annotated[bool, typer.Option(help="retrain and redeploy even if a model is deployed")] = False,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default MNIST_HITL_EPOCHS)")] = None,
) -> None:
    """Train and deploy the first model, unless one is deployed."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.retrain.training import train_first_model

    result = train_first_model(get_settings(), force=force, epochs=epochs)
    if not result["trained"]:
        typer.echo(f"model {result['model_version']} is deployed already (use --force to retrain)", err=True)
    typer.echo(json.dumps(result))


@commands.command()
def cycle(force_retrain: Annotated[bool, typer.Option(help="retrain whatever the monitor decides")] = False) -> None:
    """Run one learning cycle now (monitor, then retrain if needed), without any server."""
    from mnist_hitl.learning.loop.cycle import CycleFailed, run_cycle
    from mnist_hitl.names import CycleOutcome

    try:
        summary = run_cycle(force_retrain=force_retrain)
    except CycleFailed as error:
        fail(str(error))
    typer.echo(json.dumps(summary, default=str))
    if summary["outcome"] == CycleOutcome.BUSY:
        fail(summary["message"], code=75)  # EX_TEMPFAIL: try again later


@commands.command(name="search-worker")
def search_worker(
    once: Annotated[bool, typer.Option(help="run the trials of one search, then exit")] = False,
    poll_seconds: Annotated[float, typer.Option(min=0.1, help="seconds between looks for a search")] = 10.0,
) -> None:
    """Run Optuna trials of the retraining's searches beside it (the study in MNIST_HITL_DATABASE_URL)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.retrain.search_worker import SearchWorkerError, serve_searches

    try:
        ran = serve_searches(
            get_settings(), once=once, poll_seconds=poll_seconds, say=lambda m: typer.echo(m, err=True)
        )
    except SearchWorkerError as error:
        fail(str(error))
    typer.echo(json.dumps({"trials": ran}))


@commands.command()
def schedule() -> None:
    """Serve the learning cycle on its schedule (every MNIST_HITL_CYCLE_MINUTES) to the Prefect server."""
    from mnist_hitl.learning.loop.schedule import serve_schedule

    serve_schedule()


@commands.command()
def worker() -> None:
    """Run the learning cycles of the Prefect work pool MNIST_HITL_WORK_POOL (a Prefect process worker)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.prefect_server import worker_command

    settings = get_settings()
    try:
        command, env = worker_command(settings)
    except ValueError as error:
        fail(str(error))
    typer.echo(f"prefect worker: work pool {settings.work_pool!r} at {settings.prefect_api}", err=True)
    os.execvpe(command[0], command, env)
