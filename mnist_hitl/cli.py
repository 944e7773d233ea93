"""The ``mnist-hitl`` command: thin wrappers over the library.

Heavy libraries are imported inside each command, so ``predict``, ``correct``
and ``status`` start in a fraction of a second and never import TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="mnist-hitl: draw digits, correct the model, let it learn.", no_args_is_help=True,
                  add_completion=False)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def predict(images: Annotated[list[Path], typer.Argument(help="image files (PNG, any size)")]) -> None:
    """Predict each image, store it, print one JSON line per image."""
    from mnist_hitl.predictor import ModelFileError
    from mnist_hitl.preprocess import EmptyDrawingError, InvalidImageError
    from mnist_hitl.workbench import Workbench

    failures = 0
    with Workbench(source="cli") as bench:
        for path in images:
            try:
                result = bench.predict_png(path.read_bytes())
            except ModelFileError as error:
                _fail(str(error))
            except (OSError, EmptyDrawingError, InvalidImageError) as error:
                failures += 1
                typer.echo(json.dumps({"file": str(path), "error": str(error)}), err=True)
                continue
            typer.echo(json.dumps({"file": str(path), **result.as_json()}))
    if failures:
        raise typer.Exit(1)


def _label(prediction_id: int, label: int, kind: str) -> None:
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        try:
            label_id = bench.label(prediction_id, label, kind)
        except StoreError as error:
            _fail(str(error))
    typer.echo(json.dumps({"label_id": label_id, "prediction_id": prediction_id, "label": label, "kind": kind}))


@app.command()
def correct(prediction_id: int, label: int) -> None:
    """Store the right digit for a prediction."""
    _label(prediction_id, label, "correct")


@app.command()
def confirm(prediction_id: int) -> None:
    """Confirm a prediction was right (stored as a label too)."""
    from mnist_hitl.store import StoreError, open_store

    with open_store() as store:
        try:
            predicted = store.get_prediction(prediction_id).predicted_label
        except StoreError as error:
            _fail(str(error))
    _label(prediction_id, predicted, "confirm")


@app.command()
def status() -> None:
    """Print the deployed model version and the store's counts as JSON."""
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        typer.echo(json.dumps(bench.status()))


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="retrain and redeploy even if a model is deployed")] = False,
    epochs: Annotated[int | None, typer.Option(help="training epochs (default MNIST_HITL_EPOCHS)")] = None,
) -> None:
    """Train and deploy the first model, unless one is deployed."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.training import train_first_model

    result = train_first_model(get_settings(), force=force, epochs=epochs)
    if not result["trained"]:
        typer.echo(f"model {result['model_version']} is deployed already (use --force to retrain)", err=True)
    typer.echo(json.dumps(result))


@app.command(name="app")
def serve_app(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_APP_PORT, 8866)")] = None,
) -> None:
    """Serve the drawing app with Voila."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.serve import voila_command

    settings = get_settings()
    command = voila_command(settings, port=port)
    typer.echo(f"drawing app: http://{settings.app_host}:{port or settings.app_port}/", err=True)
    os.execvp(command[0], command)


@app.command()
def cycle(
    force_retrain: Annotated[bool, typer.Option(help="retrain whatever the monitor decides")] = False,
) -> None:
    """Run one learning cycle now (monitor, then retrain if needed), without any server."""
    from mnist_hitl.learning.cycle import CycleFailed, run_cycle
    from mnist_hitl.learning.outcomes import CycleOutcome

    try:
        summary = run_cycle(force_retrain=force_retrain)
    except CycleFailed as error:
        _fail(str(error))
    typer.echo(json.dumps(summary, default=str))
    if summary["outcome"] == CycleOutcome.BUSY:
        _fail(summary["message"], code=75)  # EX_TEMPFAIL: try again later


@app.command()
def schedule() -> None:
    """Serve the learning cycle on its schedule (every MNIST_HITL_CYCLE_MINUTES) to the Prefect server."""
    from mnist_hitl.learning.schedule import serve_schedule

    serve_schedule()


@app.command()
def metrics(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_METRICS_PORT, 9108)")] = None,
) -> None:
    """Serve the Prometheus metrics of every mnist-hitl process on one endpoint."""
    from mnist_hitl.metrics import serve_exporter

    serve_exporter(port=port)


@app.command()
def run() -> None:
    """Start the whole local stack: app, Prefect server and schedule, MLflow UI, metrics, Prometheus."""
    from mnist_hitl.stack import run_stack

    run_stack()


def main() -> None:
    """Run the command; a bad setting in the environment stops it with one line (exit status 2)."""
    from mnist_hitl.config import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    sys.exit(main())
