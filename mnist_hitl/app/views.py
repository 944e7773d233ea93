"""What the app's page shows, built from values: its style sheet, the probability bars, the model's picture.

No widget state lives here; :mod:`mnist_hitl.app.draw` puts these into its widgets.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from mnist_hitl.store import UNKNOWN_REVIEWER

DIGIT_IMAGE_SIZE = 140  # the 28x28 picture, shown 5x with nearest-neighbour pixels
INK = "white"
PAPER = "black"

STYLE = """
<style>
.hitl-app { font-family: sans-serif; }
.hitl-canvas { border: 1px solid #888; touch-action: none; cursor: crosshair; }
.hitl-prediction .hitl-value { font-size: 56px; font-weight: bold; line-height: 1; }
.hitl-bars { display: grid; grid-template-columns: 1.2em 150px 4em; gap: 2px 6px; align-items: center;
             font-size: 13px; }
.hitl-bar-track { background: #eee; height: 12px; }
.hitl-bar-fill { background: #3b7dd8; height: 12px; }
.hitl-bar.hitl-top .hitl-bar-fill { background: #d8723b; }
.hitl-digit-image img { image-rendering: pixelated; border: 1px solid #888; }
.hitl-status { min-height: 1.5em; }
.hitl-status.hitl-error { color: #b00020; }
.hitl-row { flex-wrap: wrap; row-gap: 8px; }
.hitl-row > * { flex-shrink: 0; max-width: 100%; }
.hitl-review { min-height: 70vh; }
.hitl-review-picture { image-rendering: auto; border: 1px solid #888; background: black; }
.hitl-review-small { image-rendering: pixelated; border: 1px solid #888; background: black; }
.hitl-guesses { display: grid; grid-template-columns: 1.2em 120px 4em; gap: 4px 8px; align-items: center; }
.hitl-guess:first-child .hitl-guess-digit { font-size: 40px; font-weight: bold; }
.hitl-guess-digit { font-size: 24px; }
.hitl-keys-hint { color: #666; font-size: 12px; }
.hitl-tabs.ipyevents-watched .hitl-keys-off, .hitl-tabs:not(.ipyevents-watched) .hitl-keys-on { display: none; }
.hitl-review-recent .hitl-empty { display: none; }
.hitl-review-model .hitl-changed { color: #0a6b2b; font-weight: bold; }
.hitl-review-status { min-height: 1.5em; }
.hitl-review-status.hitl-error, .hitl-review-name-note.hitl-error { color: #b00020; }
.hitl-review-name-note { font-size: 12px; color: #666; }
.hitl-review-reason { color: #8a4b00; }
.hitl-team { border-collapse: collapse; font-size: 13px; margin: 4px 0; }
.hitl-team td, .hitl-team th { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }
/* a phone: one column, the canvas whole, keys a finger can hit */
.hitl-label-choice { flex-wrap: wrap; }
@media (max-width: 600px), (pointer: coarse) {
  .hitl-digit, .hitl-app .jupyter-button, .hitl-review .jupyter-button { min-width: 44px; min-height: 44px; }
}
@media (max-width: 600px) {
  .hitl-answer { margin: 0 !important; }
  .hitl-review .hitl-answer { flex-direction: row; flex-wrap: wrap; align-items: flex-start; gap: 0 16px; }
}
</style>
"""


def probability_bars(probabilities: Sequence[float] | None) -> str:
    """The ten probabilities as an HTML bar chart, one element per digit with its value.

    Each bar is ``<div class="hitl-bar" data-digit="d" data-p="p">``; the most probable
    digit's bar also carries ``hitl-top``. Without probabilities every bar is empty.
    """
    values = [0.0] * 10 if probabilities is None else [float(p) for p in probabilities]
    top = int(np.argmax(values)) if probabilities is not None else -1
    rows = []
    for digit, p in enumerate(values):
        classes = "hitl-bar hitl-top" if digit == top else "hitl-bar"
        text = f"{p:.1%}" if probabilities is not None else ""
        rows.append(
            f'<div class="{classes}" data-digit="{digit}" data-p="{p:.6f}" style="display: contents">'
            f"<span>{digit}</span>"
            f'<div class="hitl-bar-track"><div class="hitl-bar-fill" style="width: {p * 100:.1f}%"></div></div>'
            f'<span class="hitl-bar-value">{text}</span></div>'
        )
    return f'<div class="hitl-bars">{"".join(rows)}</div>'


KEYS_HINT = (
    '<span class="hitl-keys-hint hitl-keys-on">keys: <b>0</b>-<b>9</b> label &middot; <b>Enter</b> confirm'
    " &middot; <b>Backspace</b> undo &middot; <b>s</b> skip</span>"
    '<span class="hitl-keys-hint hitl-keys-off">keys (0-9, Enter, Backspace, s) work while the pointer'
    " is over the app</span>"
)


def status_line(message: str, data: dict | None = None) -> str:
    """A message (already HTML-safe) in a ``<span>`` carrying values as ``data-`` attributes."""
    attributes = "".join(f' data-{key}="{html.escape(str(value))}"' for key, value in (data or {}).items())
    return f"<span{attributes}>{message}</span>"


def progress_line(labelled: int, left: int | None, accuracy: float | None) -> str:
    """The Review tab's progress: labelled this session, left in the queue, the model on people's labels."""
    shown = "&ndash;" if accuracy is None else f"{accuracy:.1%}"
    return status_line(
        f"labelled this session: <b>{labelled}</b> &middot; left in the queue: <b>"
        f"{'&ndash;' if left is None else left}</b> &middot; the deployed model on people's labels: <b>{shown}</b>",
        {
            "labelled": labelled,
            "left": "" if left is None else left,
            "accuracy": "" if accuracy is None else f"{accuracy:.6f}",
        },
    )


def model_line(version: str | None, previous: str | None = None) -> str:
    """The model in use, and a note when it has just replaced ``previous``."""
    if version is None:
        return '<span data-version="">no model deployed: run <code>mnist-hitl init</code></span>'
    text = html.escape(version)
    note = (
        ""
        if previous is None
        else (
            f' <span class="hitl-changed" data-previous="{html.escape(previous)}">'
            f"the model changed (was {html.escape(previous)})</span>"
        )
    )
    return f'<span data-version="{text}">model {text}</span>{note}&nbsp;'


def item_line(item, changing: str | None = None, history: Sequence[dict] = ()) -> str:
    """The line naming the drawing under review (a :class:`mnist_hitl.workbench.ranking.QueueItem`, or None: none left).

    Args:
        changing: the earlier decision this drawing is shown again to change, if it is.
        history: its labels, oldest first (``Workbench.history``), shown while changing.
    """
    if item is None:
        return (
            '<span data-prediction-id="">nothing left to review: draw digits, or add pictures with '
            "<code>mnist-hitl import</code></span>"
        )
    notes = [f"#{item.prediction_id}", html.escape(item.source), f"uncertainty {item.uncertainty:.3f}"]
    notes += ["a random pick"] if item.random else []
    notes += [f"<b>changing {html.escape(changing)}</b>"] if changing else []
    notes += [f'<span class="hitl-review-reason">{html.escape(item.reason)}</span>'] if item.reason else []
    steps = [html.escape(_step(h)) for h in history]
    notes += [f"labels so far: {' &rarr; '.join(steps)}"] if steps else []
    return status_line(
        " &middot; ".join(notes),
        {"prediction-id": item.prediction_id, "predicted": item.predicted_label, "changing": int(bool(changing))},
    )


def _step(label: dict) -> str:
    said = "undo" if label["label"] is None else f"{label['label']} ({label['kind']})"
    return said if label.get("reviewer", UNKNOWN_REVIEWER) == UNKNOWN_REVIEWER else f"{said} by {label['reviewer']}"


REVIEWER_KEY = "mnist-hitl-reviewer"  # where the browser keeps the reviewer's name (localStorage)


def name_line(reviewer: str | None, error: str | None = None, keep: bool = False) -> str:
    """The line under the name field: who labels, or why a name was refused.

    Args:
        keep: the name was just changed: the browser keeps it (or forgets it, None) for the next page, through the
            page's script (:data:`mnist_hitl.app.page.GLUE`). Not on a page's first line, which would forget the
            name before the page has filled it in.
    """
    if error is not None:
        return status_line(html.escape(error), {"reviewer-error": 1})
    if reviewer is None:
        message = "no name: labels are stored as <i>unknown</i> and nothing is held for you"
        remember = f"localStorage.removeItem({json.dumps(REVIEWER_KEY)})"
    else:
        message = f"labelling as <b>{html.escape(reviewer)}</b>: no one else is shown your drawings"
        remember = f"localStorage.setItem({json.dumps(REVIEWER_KEY)}, {json.dumps(reviewer)})"
    return status_line(message, {"reviewer": reviewer or ""}) + (script(remember) if keep else "")


def script(code: str) -> str:
    """HTML that runs ``code`` once where it is shown: an HTML widget's value is set as ``innerHTML``, which runs no
    ``<script>``, but does run the error handler of a picture that cannot load."""
    return f'<img src="" alt="" style="display: none" onerror="{html.escape(code, quote=True)}">'


def agreement_table(people: Sequence[dict], figures: dict) -> str:
    """The team's agreement as small HTML tables: each reviewer (``Workbench.reviewers``), each pair's kappa and the
    team's alpha (``Workbench.agreement``); every figure also a ``data-`` attribute."""

    def share(value: float | None) -> str:
        return "&ndash;" if value is None else f"{value:.0%}"

    def number(value: float | None) -> str:
        return "&ndash;" if value is None else f"{value:.2f}"

    def plain(value: float | None) -> str:
        return "" if value is None else str(value)

    rows = "".join(
        f'<tr data-reviewer="{html.escape(p["reviewer"])}" data-labels="{p["labels"]}"'
        f' data-agreement="{plain(p["agreement"])}">'
        f"<td>{html.escape(p['reviewer'])}</td><td>{p['labels']}</td><td>{p['compared']}</td>"
        f"<td>{share(p['agreement'])}</td></tr>"
        for p in people
    )
    pairs = "".join(
        f'<tr data-pair="{html.escape(" & ".join(pair["reviewers"]))}" data-kappa="{plain(pair["kappa"])}">'
        f"<td>{html.escape(' & '.join(pair['reviewers']))}</td><td>{pair['drawings']}</td>"
        f"<td>{share(pair['agreement'])}</td><td>{number(pair['kappa'])}</td></tr>"
        for pair in figures["kappa"]
    )
    alpha = figures["alpha"]
    return (
        '<table class="hitl-team"><tr><th>reviewer</th><th>labels</th><th>compared</th>'
        f"<th>agrees with the decided label</th></tr>{rows}</table>"
        + (
            '<table class="hitl-team"><tr><th>pair</th><th>drawings both labelled</th><th>same digit</th>'
            f"<th>Cohen's kappa</th></tr>{pairs}</table>"
            if pairs
            else ""
        )
        + status_line(
            f"Krippendorff's alpha: <b>{number(alpha)}</b> over {figures['shared_drawings']} drawings labelled by"
            " two reviewers or more",
            {"alpha": plain(alpha), "shared": figures["shared_drawings"]},
        )
    )


def top_guesses(probabilities: Sequence[float], count: int = 3) -> str:
    """The model's best guesses, most probable first, each ``<div class="hitl-guess" data-digit data-p>``."""
    order = np.argsort(-np.asarray(probabilities, dtype=float), kind="stable")[:count]
    rows = []
    for digit in order:
        p = float(probabilities[digit])
        rows.append(
            f'<div class="hitl-guess" data-digit="{digit}" data-p="{p:.6f}" style="display: contents">'
            f'<span class="hitl-guess-digit">{digit}</span>'
            f'<div class="hitl-bar-track"><div class="hitl-bar-fill" style="width: {p * 100:.1f}%"></div></div>'
            f"<span>{p:.1%}</span></div>"
        )
    return f'<div class="hitl-guesses">{"".join(rows)}</div>'


def digit_png(digit: np.ndarray | None, size: int = DIGIT_IMAGE_SIZE) -> bytes:
    """The 28x28 picture the model saw as a PNG, enlarged with nearest-neighbour pixels."""
    array = np.zeros((28, 28), dtype=np.uint8) if digit is None else np.asarray(digit)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    picture = Image.fromarray(array, mode="L").resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Drop what native code writes to file descriptor 2 meanwhile.

    LiteRT prints "Created TensorFlow Lite XNNPACK delegate" from C++ whenever it loads
    a model; a kernel forwards that descriptor to the page, where it would show as an
    error box above the app. Python's own ``sys.stderr`` is not affected.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to redirect
        saved = None
    if saved is None:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
