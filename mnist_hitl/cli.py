"""The ``mnist-hitl`` command: thin wrappers over the library.

Heavy libraries are imported inside each command, so ``predict``, ``correct``
and ``status`` start in a fraction of a second and never import TensorFlow.

Whatever it is given, the command ends with status 0, 1 (refused, or failed) or 2 (a
command line it cannot parse), and says why in one line on stderr, never a traceback:
:class:`OneLineErrors` catches what the commands do not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    """The command group, reporting every error in one line: usage errors exit 2, the others 1."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Exception as error:  # the last place where a traceback can become one line
            message, status = _one_line(error)
            if message is not None:
                _say(message)
        sys.exit(status if isinstance(status, int) else 0)


def _one_line(error: Exception) -> tuple[str | None, int]:
    """The message and exit status for an error that reached the top of a command."""
    from mnist_hitl.config import SettingsError
    from mnist_hitl.store import StoreError

    if type(error).__name__ == "NoArgsIsHelpError":  # no arguments at all: show the help, as usual
        error.show()
        return None, 2
    if hasattr(error, "format_message") and hasattr(error, "exit_code"):  # click's usage and parameter errors
        context = getattr(error, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        return error.format_message() + hint, error.exit_code
    if isinstance(error, SettingsError):
        return str(error), 2
    if isinstance(error, StoreError):
        return str(error), 1
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror, 1
    if type(error).__name__ == "Abort":  # typer's or click's
        return "aborted", 1
    first_line = (str(error).splitlines() or [""])[0]
    return f"unexpected {type(error).__name__}: {first_line}", 1


app = typer.Typer(
    help="mnist-hitl: draw digits, correct the model, let it learn.",
    no_args_is_help=True,
    add_completion=False,
    cls=OneLineErrors,
)
# A label or an id may be negative: "-1" is then an argument (refused with a reason), not an unknown option.
NUMBERS = {"ignore_unknown_options": True}


def _say(message: str) -> None:
    typer.echo("error: " + " ".join(message.splitlines()), err=True)  # one line, whatever a file name holds


def _fail(message: str, code: int = 1) -> None:
    _say(message)
    raise typer.Exit(code)


@app.command()
def predict(images: Annotated[list[Path], typer.Argument(help="image files (PNG, any size)")]) -> None:
    """Predict each image, store it, print one JSON line per image."""
    from mnist_hitl.model import ModelFileError
    from mnist_hitl.preprocess import EmptyDrawingError, InvalidImageError
    from mnist_hitl.workbench import Workbench

    failures = 0
    with Workbench(source="cli") as bench:
        for path in images:
            try:
                result = bench.predict_file(path)
            except ModelFileError as error:
                _fail(str(error))
            except (OSError, EmptyDrawingError, InvalidImageError) as error:
                failures += 1
                message = f"{error.strerror}: {path}" if isinstance(error, OSError) and error.strerror else str(error)
                typer.echo(json.dumps({"file": str(path), "error": message}), err=True)
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


@app.command(context_settings=NUMBERS)
def correct(prediction_id: int, label: int) -> None:
    """Store the right digit for a prediction."""
    _label(prediction_id, label, "correct")


@app.command(context_settings=NUMBERS)
def confirm(prediction_id: int) -> None:
    """Confirm a prediction was right (stored as a label too)."""
    from mnist_hitl.store import StoreError, open_store

    with open_store() as store:
        try:
            predicted = store.get_prediction(prediction_id).predicted_label
        except StoreError as error:
            _fail(str(error))
    _label(prediction_id, predicted, "confirm")


@app.command(name="import")
def import_pictures(
    paths: Annotated[list[Path], typer.Argument(help="PNG or JPEG files, folders (recursively), zips")],
) -> None:
    """Predict and store pictures unlabelled in the review pool; one JSON line per picture, counts on stderr."""
    from collections import Counter

    from mnist_hitl.model import ModelFileError
    from mnist_hitl.workbench import Workbench

    counts = Counter()
    with Workbench(source="cli") as bench:
        try:
            for outcome in bench.import_pictures(paths, progress=True):
                counts[next(key for key in ("prediction_id", "duplicate_of", "error") if key in outcome)] += 1
                typer.echo(json.dumps(outcome))
        except ModelFileError as error:
            _fail(str(error))
    typer.echo(
        json.dumps(
            {"imported": counts["prediction_id"], "duplicates": counts["duplicate_of"], "refused": counts["error"]}
        ),
        err=True,
    )
    if counts["error"]:
        raise typer.Exit(1)


@app.command()
def queue(
    limit: Annotated[int, typer.Option(min=0, help="at most this many drawings")] = 20,
    strategy: Annotated[str, typer.Option(help="margin, entropy, or doubtful (labels the model doubts)")] = "margin",
) -> None:
    """Print the review queue, least sure first, as JSON lines, scored by the deployed model."""
    from mnist_hitl.model import ModelFileError
    from mnist_hitl.workbench import STRATEGIES, Workbench

    if strategy not in STRATEGIES:
        _fail(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", code=2)
    with Workbench(source="cli") as bench:
        try:
            items = bench.queue(limit=limit, strategy=strategy)
        except ModelFileError as error:
            _fail(str(error))
    for item in items:
        typer.echo(json.dumps(item.as_json()))


@app.command(context_settings=NUMBERS)
def history(prediction_id: int) -> None:
    """Print every label of a prediction, oldest first, as JSON lines (an undo has no label)."""
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        try:
            labels = bench.history(prediction_id)
        except StoreError as error:
            _fail(str(error))
    for label in labels:
        typer.echo(json.dumps(label))


@app.command(context_settings=NUMBERS)
def undo(prediction_id: int) -> None:
    """Undo a prediction's label (appended as a label of kind undo): it returns to the review queue."""
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        try:
            label_id = bench.undo(prediction_id)
        except StoreError as error:
            _fail(str(error))
    typer.echo(json.dumps({"label_id": label_id, "prediction_id": prediction_id, "kind": "undo"}))


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="the copy to write (a new file)")],
    force: Annotated[bool, typer.Option(help="replace PATH if it exists")] = False,
) -> None:
    """Copy the store to PATH while the app keeps writing (SQLite's online backup), check the copy, print its counts."""
    from mnist_hitl.store import open_store

    if path.is_dir():
        _fail(f"{path} is a folder: name a file")
    if path.exists() and not force:
        _fail(f"{path} exists: name a new file, or add --force to replace it")
    with open_store() as store:
        counts = store.backup(path)
    typer.echo(json.dumps({"backup": str(path), "integrity": "ok", **counts}))


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
    from mnist_hitl.learning.retrain.training import train_first_model

    result = train_first_model(get_settings(), force=force, epochs=epochs)
    if not result["trained"]:
        typer.echo(f"model {result['model_version']} is deployed already (use --force to retrain)", err=True)
    typer.echo(json.dumps(result))


@app.command(name="app")
def serve_app(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_APP_PORT, 8866)")] = None,
) -> None:
    """Serve the drawing app with Voila."""
    from mnist_hitl.app.command import voila_command
    from mnist_hitl.config import get_settings

    settings = get_settings()
    command = voila_command(settings, port=port)
    typer.echo(f"drawing app: http://{settings.app_host}:{port or settings.app_port}/", err=True)
    os.execvp(command[0], command)


@app.command()
def lab(port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_LAB_PORT, 8888)")] = None) -> None:
    """Serve JupyterLab on the notebooks, with a token (MNIST_HITL_LAB_TOKEN, or a new one printed here)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.lab import lab_command, lab_environment, lab_folder, lab_url, with_token

    settings = with_token(get_settings())
    folder = lab_folder(settings)
    command = lab_command(settings, folder, port=port)
    typer.echo(f"jupyterlab: {lab_url(settings, port)} (notebooks in {folder})", err=True)
    os.execvpe(command[0], command, lab_environment(settings))


@app.command()
def cycle(force_retrain: Annotated[bool, typer.Option(help="retrain whatever the monitor decides")] = False) -> None:
    """Run one learning cycle now (monitor, then retrain if needed), without any server."""
    from mnist_hitl.learning.loop.cycle import CycleFailed, run_cycle
    from mnist_hitl.names import CycleOutcome

    try:
        summary = run_cycle(force_retrain=force_retrain)
    except CycleFailed as error:
        _fail(str(error))
    typer.echo(json.dumps(summary, default=str))
    if summary["outcome"] == CycleOutcome.BUSY:
        _fail(summary["message"], code=75)  # EX_TEMPFAIL: try again later


@app.command(name="search-worker")
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
        _fail(str(error))
    typer.echo(json.dumps({"trials": ran}))


@app.command()
def schedule() -> None:
    """Serve the learning cycle on its schedule (every MNIST_HITL_CYCLE_MINUTES) to the Prefect server."""
    from mnist_hitl.learning.loop.schedule import serve_schedule

    serve_schedule()


@app.command()
def worker() -> None:
    """Run the learning cycles of the Prefect work pool MNIST_HITL_WORK_POOL (a Prefect process worker)."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.services.prefect_server import worker_command

    settings = get_settings()
    try:
        command, env = worker_command(settings)
    except ValueError as error:
        _fail(str(error))
    typer.echo(f"prefect worker: work pool {settings.work_pool!r} at {settings.prefect_api}", err=True)
    os.execvpe(command[0], command, env)


@app.command()
def metrics(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_METRICS_PORT, 9108)")] = None,
) -> None:
    """Serve the Prometheus metrics of every mnist-hitl process on one endpoint."""
    from mnist_hitl.services.exporter import serve_exporter

    serve_exporter(port=port)


@app.command()
def follow(once: Annotated[bool, typer.Option(help="sync once, print the outcome as JSON and exit")] = False) -> None:
    """Serve the MLflow registry's champion on this node (MNIST_HITL_MODEL_SOURCE=registry), checked every
    MNIST_HITL_REGISTRY_POLL_SECONDS; running predictors switch by themselves."""
    import logging
    import signal
    import threading

    from mnist_hitl.config import get_settings
    from mnist_hitl.model import ModelFileError, deployed_model
    from mnist_hitl.model.follow import RegistryError, follow, sync_from_registry

    settings = get_settings()
    if settings.model_source != "registry":
        _fail("MNIST_HITL_MODEL_SOURCE is local: set it to registry to serve the registry's champion here")
    if once:
        try:
            changed = sync_from_registry(settings)
        except (RegistryError, ModelFileError) as error:
            _fail(str(error))
        typer.echo(json.dumps({"model_version": deployed_model(settings.models_dir).version, "changed": bool(changed)}))
        return
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mnist_hitl").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    follow(settings, stop)


@app.command()
def run() -> None:
    """Start the whole local stack: app, Prefect server and schedule, MLflow UI, JupyterLab, metrics, Prometheus."""
    from mnist_hitl.services.stack import run_stack

    run_stack()


@app.command()
def api(
    port: Annotated[int | None, typer.Option(help="port (default MNIST_HITL_API_PORT, 8000)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API (FastAPI, uvicorn): predict, label, history, reload; docs at /docs."""
    from mnist_hitl.api import serve_api

    serve_api(port=port, workers=workers)


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
