"""What the app's page shows, built from values: its style sheet, the probability bars, the model's picture.

No widget state lives here; :mod:`mnist_hitl.app` puts these into its widgets.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

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
