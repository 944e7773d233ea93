"""The drawing app: a canvas to draw a digit on, the model's answer, and the buttons to label it.

Served by Voila from ``notebooks/draw.ipynb``. Two facts shape the code:

* Voila executes the notebook in a preheated kernel before any browser is
  connected, and a canvas drawn on before its client exists stays broken for the
  whole page. So nothing is drawn (not even a style set) until the canvas reports
  ``client_ready``; the set-up and any strokes so far are replayed then.
* The canvas' image data reaches the kernel 0.1-1 s after the mouse is released.
  The app keeps the stroke points from the mouse and touch events it receives and
  renders them itself (:func:`mnist_hitl.preprocess.render_strokes`) to predict;
  the canvas only shows them.

Every widget carries a stable CSS class (``hitl-...``) and the values a test or a
script needs are written into the page as text and ``data-`` attributes.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np
from ipycanvas import Canvas, hold_canvas
from ipywidgets.widgets.widget_string import HTMLStyle

from mnist_hitl.app.views import (
    DIGIT_IMAGE_SIZE,
    INK,
    PAPER,
    STYLE,
    digit_png,
    native_stderr_silenced,
    probability_bars,
)
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError, deployed_model
from mnist_hitl.preprocess import CANVAS_SIZE, STROKE_WIDTH, EmptyDrawingError, InvalidImageError, render_strokes
from mnist_hitl.store import StoreError
from mnist_hitl.workbench import PredictionResult, Workbench

__all__ = ["DrawingApp", "digit_png", "probability_bars"]


class DrawingApp:
    """The widgets of the drawing app and what its buttons do.

    Args:
        settings: defaults to the environment's settings (``MNIST_HITL_HOME``).
        workbench: the predict/label operations; one is made from ``settings`` if not given.

    Attributes:
        strokes: the stroke points drawn so far, in canvas pixels (what is predicted).
        result: the current prediction, or None.
        chosen_label: the digit picked for **Correct & save**, or None.
        status_text: the status line as plain text (what was saved, or what went wrong).
    """

    def __init__(self, settings: Settings | None = None, workbench: Workbench | None = None) -> None:
        self.settings = settings or (workbench.settings if workbench else get_settings())
        self.workbench = workbench or Workbench(self.settings, source="app")
        self.strokes: list[list[tuple[float, float]]] = []
        self.result: PredictionResult | None = None
        self.chosen_label: int | None = None
        self.client_ready = False
        self._pen_down = False
        self._build()
        self._show_result(None)
        self._show_version()
        self._set_status("draw a digit, then press Predict")

    # widgets -----------------------------------------------------------------------

    def _build_canvas(self) -> None:
        # Only width and height are given: any drawing attribute set here would be sent
        # to a client that does not exist yet (see the module's docstring).
        self.canvas = Canvas(
            width=CANVAS_SIZE,
            height=CANVAS_SIZE,
            layout=widgets.Layout(width=f"{CANVAS_SIZE}px", height=f"{CANVAS_SIZE}px"),
        )
        self.canvas.add_class("hitl-canvas")
        self.canvas.on_client_ready(self._on_client_ready)
        self.canvas.on_mouse_down(self.pen_down)
        self.canvas.on_mouse_move(self.pen_move)
        self.canvas.on_mouse_up(self.pen_up)
        self.canvas.on_mouse_out(self.pen_up)
        self.canvas.on_touch_start(lambda touches: self.pen_down(*touches[0]) if touches else None)
        self.canvas.on_touch_move(lambda touches: self.pen_move(*touches[0]) if touches else None)
        self.canvas.on_touch_end(lambda touches: self.pen_up(*touches[0]) if touches else self.pen_up())
        self.canvas.on_touch_cancel(lambda touches: self.pen_up())

    def _build(self) -> None:
        self._build_canvas()
        # Widgets that look alike share one Layout and one style: every widget is a model
        # the page must fetch and build before the canvas appears, so fewer load faster.
        button_layout, digit_layout = widgets.Layout(width="auto"), widgets.Layout(width="34px")
        button_style, html_style, plain = widgets.ButtonStyle(), HTMLStyle(), widgets.Layout()

        def button(description: str, css: str, handler, style: str = "", tooltip: str = "") -> widgets.Button:
            b = widgets.Button(
                description=description, button_style=style, tooltip=tooltip, layout=button_layout, style=button_style
            )
            b.add_class(css)
            b.on_click(lambda _: handler())
            return b

        def html_widget(value: str = "", css: str | None = None) -> widgets.HTML:
            h = widgets.HTML(value, layout=plain, style=html_style)
            if css:
                h.add_class(css)
            return h

        self.predict_button = button("Predict", "hitl-predict", self.predict, "primary", "predict the drawing")
        self.clear_button = button("Clear", "hitl-clear", self.clear, tooltip="erase the drawing")
        self.correct_button = button(
            "Correct & save", "hitl-correct", self.correct, "warning", "store the chosen digit as the right answer"
        )
        self.confirm_button = button(
            "Confirm", "hitl-confirm", self.confirm, "success", "the prediction is right: store it as a label"
        )
        self.reload_button = button("Reload", "hitl-reload", self.reload, tooltip="reload the deployed model")

        self.digit_buttons = []
        for digit in range(10):
            b = widgets.Button(description=str(digit), layout=digit_layout, style=button_style)
            b.add_class("hitl-digit")
            b.add_class(f"hitl-digit-{digit}")
            b.on_click(lambda _, d=digit: self.choose(d))
            self.digit_buttons.append(b)
        self.label_choice = widgets.HBox(self.digit_buttons, layout=plain)
        self.label_choice.add_class("hitl-label-choice")

        self.prediction = html_widget(css="hitl-prediction")
        self.confidence = html_widget(css="hitl-confidence")
        self.probabilities = html_widget(css="hitl-probabilities")
        self.digit_image = widgets.Image(format="png", width=DIGIT_IMAGE_SIZE, height=DIGIT_IMAGE_SIZE)
        self.digit_image.add_class("hitl-digit-image")
        self.model_version = html_widget(css="hitl-model-version")
        self.status = html_widget(css="hitl-status")
        self.widget = self._layout(html_widget, plain)

    def _layout(self, html_widget, plain: widgets.Layout) -> widgets.VBox:
        """The app's widgets arranged: the canvas and its buttons, the answer, the labelling row, the model."""
        drawing = widgets.VBox(
            [self.canvas, widgets.HBox([self.predict_button, self.clear_button], layout=plain)], layout=plain
        )
        answer = widgets.VBox(
            [
                widgets.HBox([self.prediction, self.confidence], layout=widgets.Layout(align_items="flex-end")),
                self.probabilities,
                html_widget("<small>what the model saw (28x28)</small>"),
                self.digit_image,
            ],
            layout=widgets.Layout(margin="0 0 0 16px"),
        ).add_class("hitl-answer")
        labelling = widgets.HBox(
            [html_widget("right digit:&nbsp;"), self.label_choice, self.correct_button, self.confirm_button],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        model = widgets.HBox([self.model_version, self.reload_button], layout=widgets.Layout(align_items="center"))
        row = widgets.HBox([drawing, answer], layout=plain).add_class("hitl-row")  # one column on a phone
        page = widgets.VBox([html_widget(STYLE), row, labelling, model, self.status], layout=plain)
        return page.add_class("hitl-app")

    def display(self) -> None:
        """Show the app in the notebook (or the Voila page)."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.display()

    def preload(self) -> None:
        """Load the deployed model now, so the first prediction does not wait for it.

        A missing model is not an error here: the page says so, and Predict retries.
        """
        try:
            with native_stderr_silenced():
                self.workbench.refresh_model()
        except ModelFileError:
            pass
        self._show_version()

    # the canvas ----------------------------------------------------------------------

    def _on_client_ready(self) -> None:
        self.client_ready = True
        self._repaint()
        self.canvas.add_class("hitl-ready")  # the page may now be drawn on

    def _repaint(self) -> None:
        """Paint the set-up and every stroke so far (a new client starts from a blank canvas)."""
        if not self.client_ready:
            return
        canvas = self.canvas
        with hold_canvas():
            canvas.line_width = STROKE_WIDTH
            canvas.line_cap = "round"
            canvas.line_join = "round"
            canvas.stroke_style = INK
            canvas.fill_style = PAPER
            canvas.fill_rect(0, 0, CANVAS_SIZE, CANVAS_SIZE)
            canvas.fill_style = INK
            for stroke in self.strokes:
                if len(stroke) > 1:
                    canvas.stroke_lines(stroke)
                x, y = stroke[0]
                canvas.fill_circle(x, y, STROKE_WIDTH / 2)

    def pen_down(self, x: float, y: float) -> None:
        """Start a stroke at (x, y) (mouse down or a finger touching the canvas)."""
        point = (float(x), float(y))
        self.strokes.append([point])
        self._pen_down = True
        if self.client_ready:
            self.canvas.fill_circle(point[0], point[1], STROKE_WIDTH / 2)

    def pen_move(self, x: float, y: float) -> None:
        """Extend the current stroke to (x, y); moves with the pen up are ignored."""
        if not self._pen_down:
            return
        point = (float(x), float(y))
        last = self.strokes[-1][-1]
        if point == last:
            return
        self.strokes[-1].append(point)
        if self.client_ready:
            self.canvas.stroke_line(last[0], last[1], point[0], point[1])

    def pen_up(self, x: float | None = None, y: float | None = None) -> None:
        """End the current stroke (at (x, y) when the event carries a position)."""
        if not self._pen_down:
            return
        if x is not None and y is not None:
            self.pen_move(x, y)
        self._pen_down = False

    def picture(self) -> np.ndarray:
        """The drawing as the canvas shows it (280x280 ``uint8``, white on black)."""
        return render_strokes(self.strokes)

    # the buttons ---------------------------------------------------------------------

    def predict(self) -> PredictionResult | None:
        """Predict the drawing, store the prediction, show the answer; None if refused."""
        self.chosen_label = None
        self._show_choice()
        try:
            with native_stderr_silenced():  # a newly deployed model is loaded on the way
                result = self.workbench.predict_picture(self.picture())
        except (EmptyDrawingError, InvalidImageError, ModelFileError, StoreError) as error:
            self.result = None
            self._show_result(None)
            self._show_version(self.workbench.serving_version)
            self._set_status(html.escape(str(error)), error=True)
            return None
        self.result = result
        self._show_result(result)
        self._show_version(result.model_version)
        self._set_status(
            f"prediction {result.prediction_id}: a {result.predicted_label} ({result.confidence:.1%}). "
            "Confirm it, or choose the right digit and press Correct &amp; save.",
            data={"prediction-id": result.prediction_id},
        )
        return result

    def choose(self, digit: int) -> None:
        """Pick the right digit for **Correct & save**."""
        self.chosen_label = int(digit)
        self._show_choice()

    def correct(self) -> int | None:
        """Store the chosen digit as the label of the current prediction; returns the label id."""
        if self.result is None:
            self._set_status("nothing to correct: draw a digit and press Predict first", error=True)
            return None
        if self.chosen_label is None:
            self._set_status("choose the right digit (0-9) first, then press Correct &amp; save", error=True)
            return None
        label = self.chosen_label
        # Choosing the predicted digit says the prediction was right: that is a confirmation.
        kind = "confirm" if label == self.result.predicted_label else "correct"
        label_id = self._save(label, kind)
        if label_id is not None:
            pid = self.result.prediction_id
            message = (
                f"saved correction: prediction {pid} is a {label}"
                if kind == "correct"
                else f"saved confirmation: prediction {pid} is a {label}, as predicted"
            )
            self._set_status(message, data={"prediction-id": pid, "label": label, "kind": kind})
        return label_id

    def confirm(self) -> int | None:
        """Store the predicted digit as the right one; returns the label id."""
        if self.result is None:
            self._set_status("nothing to confirm: draw a digit and press Predict first", error=True)
            return None
        label = self.result.predicted_label
        label_id = self._save(label, "confirm")
        if label_id is not None:
            pid = self.result.prediction_id
            self._set_status(
                f"saved confirmation: prediction {pid} is a {label}",
                data={"prediction-id": pid, "label": label, "kind": "confirm"},
            )
        return label_id

    def _save(self, label: int, kind: str) -> int | None:
        try:
            return self.workbench.label(self.result.prediction_id, label, kind)
        except StoreError as error:
            self._set_status(f"not saved: {html.escape(str(error))}", error=True)
            return None

    def clear(self) -> None:
        """Erase the drawing and the answer shown for it."""
        self.strokes = []
        self._pen_down = False
        self.result = None
        self.chosen_label = None
        self._show_choice()
        self._show_result(None)
        self._repaint()
        self._set_status("cleared: draw a digit, then press Predict")

    def reload(self) -> str | None:
        """Reload the deployed model now; returns its version, or None if there is none."""
        try:
            with native_stderr_silenced():
                self.workbench.refresh_model(force=True)
        except ModelFileError as error:
            self._show_version(self.workbench.serving_version)  # what still answers, if anything
            self._set_status(html.escape(str(error)), error=True)
            return None
        version = self.workbench.model_version
        self._show_version(version)
        self._set_status(
            f"reloaded the deployed model: version {html.escape(version)}", data={"model-version": version}
        )
        return version

    # what the page shows ------------------------------------------------------------

    def _show_result(self, result: PredictionResult | None) -> None:
        if result is None:
            self.prediction.value = '<span class="hitl-value" data-label="">&ndash;</span>'
            self.confidence.value = '<span data-confidence="">&nbsp;</span>'
            self.probabilities.value = probability_bars(None)
            self.digit_image.value = digit_png(None)
            return
        self.prediction.value = (
            f'<span class="hitl-value" data-label="{result.predicted_label}">{result.predicted_label}</span>'
        )
        self.confidence.value = (
            f'<span data-confidence="{result.confidence:.6f}">&nbsp;confidence {result.confidence:.1%}</span>'
        )
        self.probabilities.value = probability_bars(result.probabilities)
        self.digit_image.value = digit_png(result.digit)

    def _show_version(self, version: str | None = None) -> None:
        if version is None:
            try:
                version = deployed_model(self.settings.models_dir).version
            except ModelFileError:
                version = None
        if version is None:
            self.model_version.value = (
                '<span data-version="">no model deployed: run <code>mnist-hitl init</code></span>'
            )
        else:
            text = html.escape(version)
            self.model_version.value = f'<span data-version="{text}">model {text}</span>&nbsp;'

    def _show_choice(self) -> None:
        for digit, b in enumerate(self.digit_buttons):
            b.button_style = "info" if digit == self.chosen_label else ""

    def _set_status(self, message: str, error: bool = False, data: dict | None = None) -> None:
        """Show a message (already HTML-safe) in the status line, with values as data attributes."""
        attributes = "".join(f' data-{key}="{html.escape(str(value))}"' for key, value in (data or {}).items())
        self.status.value = f"<span{attributes}>{message}</span>"
        if error:
            self.status.add_class("hitl-error")
        else:
            self.status.remove_class("hitl-error")
        self.status_text = html.unescape(message)
