"""A person's commands: predict, label (naming the reviewer), undo, history, import, the queues, status, backup,
export, the team's agreement.

Thin wrappers over :class:`mnist_hitl.workbench.Workbench`, printing JSON lines. They never import
TensorFlow: the deployed model predicts with its LiteRT export, so each starts in a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mnist_hitl.cli.errors import fail

commands = typer.Typer()
REVIEWER_HELP = "who gives the label (default: your login name)"
# A label or an id may be negative: "-1" is then an argument (refused with a reason), not an unknown option.
NUMBERS = {"ignore_unknown_options": True}


@commands.command()
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
                fail(str(error))
            except (OSError, EmptyDrawingError, InvalidImageError) as error:
                failures += 1
                message = f"{error.strerror}: {path}" if isinstance(error, OSError) and error.strerror else str(error)
                typer.echo(json.dumps({"file": str(path), "error": message}), err=True)
                continue
            typer.echo(json.dumps({"file": str(path), **result.as_json()}))
    if failures:
        raise typer.Exit(1)


def login_name() -> str:
    """The default reviewer: the login name (``unknown`` where the system knows none)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _label(prediction_id: int, label: int, kind: str, reviewer: str | None) -> None:
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    reviewer = login_name() if reviewer is None else reviewer
    with Workbench(source="cli") as bench:
        try:
            label_id = bench.label(prediction_id, label, kind, reviewer)
        except StoreError as error:
            fail(str(error))
    answer = {"label_id": label_id, "prediction_id": prediction_id, "label": label, "kind": kind}
    typer.echo(json.dumps({**answer, "reviewer": reviewer.strip()}))


@commands.command(context_settings=NUMBERS)
def correct(
    prediction_id: int,
    label: int,
    reviewer: Annotated[str | None, typer.Option(help=REVIEWER_HELP, show_default=False)] = None,
) -> None:
    """Store the right digit for a prediction."""
    _label(prediction_id, label, "correct", reviewer)


@commands.command(context_settings=NUMBERS)
def confirm(
    prediction_id: int, reviewer: Annotated[str | None, typer.Option(help=REVIEWER_HELP, show_default=False)] = None
) -> None:
    """Confirm a prediction was right (stored as a label too)."""
    from mnist_hitl.store import StoreError, open_store

    with open_store() as store:
        try:
            predicted = store.get_prediction(prediction_id).predicted_label
        except StoreError as error:
            fail(str(error))
    _label(prediction_id, predicted, "confirm", reviewer)


@commands.command(context_settings=NUMBERS)
def adjudicate(
    prediction_id: int,
    label: int,
    reviewer: Annotated[str | None, typer.Option(help=REVIEWER_HELP, show_default=False)] = None,
) -> None:
    """Decide a drawing reviewers disagree on, or a suspect label: its digit trains and judges from now (queue
    --strategy adjudicate or suspect)."""
    _label(prediction_id, label, "adjudicate", reviewer)


IMPORT_HELP = (
    "Predict and store pictures unlabelled in the review pool; one JSON line per picture, counts on stderr.\n\n"
    "An export comes back labelled: an image folder (or its zip) with its labels.csv, or a csv, jsonl or parquet"
    " file. Its 28x28 PNGs are stored as they are, read by the model deployed here, and labelled with their digit"
    " and kind (a confirm of a digit this model reads otherwise becomes a correct). A picture stored already is"
    " labelled only if its current label is another digit, so an export imported twice adds nothing twice."
)


@commands.command(name="import", help=IMPORT_HELP)
def import_pictures(
    paths: Annotated[
        list[Path],
        typer.Argument(help="PNG or JPEG files, folders (recursively), zips; exports (mnist-hitl export) with labels"),
    ],
    reviewer: Annotated[
        str | None, typer.Option(help="who gives an export's labels (default: your login name)", show_default=False)
    ] = None,
) -> None:
    """Predict and store pictures in the review pool, and exports with their labels (:data:`IMPORT_HELP`)."""
    from collections import Counter

    from mnist_hitl.model import ModelFileError
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    counts = Counter()
    reviewer = login_name() if reviewer is None else reviewer
    with Workbench(source="cli") as bench:
        try:
            for outcome in bench.import_pictures(paths, progress=True, reviewer=reviewer):
                counts[next(key for key in ("prediction_id", "duplicate_of", "error") if key in outcome)] += 1
                counts["labelled"] += outcome.get("label_id") is not None
                typer.echo(json.dumps(outcome))
        except (ModelFileError, StoreError) as error:
            fail(str(error))
    imported, duplicates, refused = counts["prediction_id"], counts["duplicate_of"], counts["error"]
    answer = {"imported": imported, "duplicates": duplicates, "refused": refused, "labelled": counts["labelled"]}
    typer.echo(json.dumps(answer), err=True)
    if counts["error"]:
        raise typer.Exit(1)


@commands.command()
def queue(
    limit: Annotated[int, typer.Option(min=0, help="at most this many drawings")] = 20,
    strategy: Annotated[
        str,
        typer.Option(
            help="margin, entropy, doubtful (labels the model doubts), suspect (labels confident learning"
            " flags, each with its reason: decide with mnist-hitl adjudicate), second-opinion (drawings others"
            " labelled, their answer not shown) or adjudicate (drawings reviewers disagree on, with every answer:"
            " decide with mnist-hitl adjudicate)"
        ),
    ] = "margin",
    reviewer: Annotated[
        str | None,
        typer.Option(
            help="who reviews them (default: your login name): leased to them for MNIST_HITL_LEASE_SECONDS,"
            " so no other reviewer is given them",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the review queue, least sure first, as JSON lines, scored by the deployed model."""
    from mnist_hitl.model import ModelFileError
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import STRATEGIES, Workbench

    if strategy not in STRATEGIES:
        fail(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}", code=2)
    with Workbench(source="cli") as bench:
        try:
            items = bench.queue(limit=limit, strategy=strategy, reviewer=login_name() if reviewer is None else reviewer)
        except (ModelFileError, StoreError) as error:
            fail(str(error))
    for item in items:
        typer.echo(json.dumps(item.as_json()))


@commands.command(context_settings=NUMBERS)
def history(prediction_id: int) -> None:
    """Print every label of a prediction, oldest first, as JSON lines (an undo has no label)."""
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        try:
            labels = bench.history(prediction_id)
        except StoreError as error:
            fail(str(error))
    for label in labels:
        typer.echo(json.dumps(label))


@commands.command(context_settings=NUMBERS)
def undo(
    prediction_id: int, reviewer: Annotated[str | None, typer.Option(help=REVIEWER_HELP, show_default=False)] = None
) -> None:
    """Undo a prediction's label (appended as a label of kind undo): it returns to the review queue."""
    from mnist_hitl.store import StoreError
    from mnist_hitl.workbench import Workbench

    reviewer = login_name() if reviewer is None else reviewer
    with Workbench(source="cli") as bench:
        try:
            label_id = bench.undo(prediction_id, reviewer)
        except StoreError as error:
            fail(str(error))
    answer = {"label_id": label_id, "prediction_id": prediction_id, "kind": "undo", "reviewer": reviewer.strip()}
    typer.echo(json.dumps(answer))


@commands.command()
def backup(
    path: Annotated[Path, typer.Argument(help="the copy to write (a new file)")],
    force: Annotated[bool, typer.Option(help="replace PATH if it exists")] = False,
) -> None:
    """Copy the store to PATH while the app keeps writing (SQLite's online backup), check the copy, print its counts."""
    from mnist_hitl.store import open_store

    if path.is_dir():
        fail(f"{path} is a folder: name a file")
    if path.exists() and not force:
        fail(f"{path} exists: name a new file, or add --force to replace it")
    with open_store() as store:
        counts = store.backup(path)
    typer.echo(json.dumps({"backup": str(path), "integrity": "ok", **counts}))


@commands.command()
def status() -> None:
    """Print the deployed model version and the store's counts as JSON."""
    from mnist_hitl.workbench import Workbench

    with Workbench(source="cli") as bench:
        typer.echo(json.dumps(bench.status()))


@commands.command()
def export(
    path: Annotated[Path, typer.Argument(help="the file (csv, jsonl, parquet) or the new folder (imagefolder, hf)")],
    form: Annotated[
        str,
        typer.Option(
            "--format",
            help="csv, jsonl, imagefolder (<digit>/<id>.png and labels.csv), parquet or hf (a Hugging Face data set)",
        ),
    ] = "csv",
    since: Annotated[
        str | None,
        typer.Option(help="only labels given at or after this UTC date or time (ISO: 2026-01-31, 2026-01-31T12:00)"),
    ] = None,
    since_label_id: Annotated[int, typer.Option(min=0, help="only labels newer than this label id")] = 0,
    corrections_only: Annotated[bool, typer.Option(help="only the drawings a person corrected")] = False,
    force: Annotated[bool, typer.Option(help="replace PATH if it is a file that exists")] = False,
) -> None:
    """Export every labelled drawing with its current label and its 28x28 PNG; print what was written as JSON."""
    from mnist_hitl.store import open_store
    from mnist_hitl.workbench import export as exports

    try:
        form = exports.export_format(form)
    except ValueError:
        fail(f"--format {form!r} is not one of {', '.join(exports.FORMATS)}", code=2)
    try:
        moment = None if since is None else exports.since_moment(since)
    except ValueError as error:
        fail(f"--since {error}", code=2)
    if form in exports.FILE_FORMATS and (path.is_dir() or (path.exists() and not force)):
        fail(f"{path} is a folder: name a file" if path.is_dir() else f"{path} exists: add --force to replace it")
    with open_store() as store:
        pictures = exports.labelled_pictures(store, since_label_id, corrections_only, moment)
    try:
        exports.export_labels(pictures, path, form)
    except (ImportError, OSError) as error:
        fail(str(error))
    typer.echo(json.dumps({"export": str(path), "format": form, "labels": len(pictures)}))


@commands.command(name="agreement")
def team_agreement() -> None:
    """Print how far the reviewers agree as JSON: Cohen's kappa per pair, Krippendorff's alpha, per digit."""
    from mnist_hitl.store import open_store
    from mnist_hitl.workbench.agreement import agreement

    with open_store() as store:
        history = store.labels()
    typer.echo(json.dumps(agreement(history)))


@commands.command(context_settings=NUMBERS)
def release(
    prediction_id: int, reviewer: Annotated[str | None, typer.Option(help=REVIEWER_HELP, show_default=False)] = None
) -> None:
    """Give back a drawing the queue leased to the reviewer (a skip): the queue may give it to others now."""
    from mnist_hitl.workbench import Workbench

    reviewer = login_name() if reviewer is None else reviewer
    with Workbench(source="cli") as bench:
        if not bench.release(prediction_id, reviewer):
            fail(f"prediction {prediction_id} is not leased to {reviewer!r}")
    typer.echo(json.dumps({"prediction_id": prediction_id, "released": reviewer}))
