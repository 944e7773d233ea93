"""The drawing app's logic, driven in-process: canvas events, buttons, what is stored and shown."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_hitl.app.draw import DrawingApp, digit_png, probability_bars
from mnist_hitl.config import Settings
from mnist_hitl.model import deployed_model
from mnist_hitl.preprocess import render_strokes
from mnist_hitl.store import Store, StoreError
from tests.support.helpers import REPO

NOTEBOOK = REPO / "notebooks" / "draw.ipynb"
SEVEN = [(60, 50), (220, 50), (150, 250)]


def send(app: DrawingApp, event: str, **content) -> None:
    """Deliver a message to the canvas as its browser view would send it."""
    app.canvas._handle_frontend_event(None, {"event": event, **content}, [])


def draw_with_mouse(app: DrawingApp, points, steps: int = 8) -> None:
    (x, y), rest = points[0], points[1:]
    send(app, "mouse_down", x=x, y=y)
    for nx, ny in rest:
        for i in range(1, steps + 1):
            send(app, "mouse_move", x=x + (nx - x) * i / steps, y=y + (ny - y) * i / steps)
        x, y = nx, ny
    send(app, "mouse_up", x=x, y=y)


def bars(app: DrawingApp) -> list[float]:
    return [float(p) for p in re.findall(r'data-p="([0-9.]+)"', app.probabilities.value)]


@pytest.fixture
def app(home_with_model: Settings):
    drawing_app = DrawingApp(home_with_model)
    drawing_app.preload()
    yield drawing_app
    drawing_app.workbench.close()


def test_the_app_process_never_imports_tensorflow_or_scipy(home_with_model: Settings) -> None:
    """TensorFlow would cost every app kernel ~650 MB, scipy ~26 MB."""
    code = (
        "import sys\n"
        "from mnist_hitl.app.draw import DrawingApp\n"
        "app = DrawingApp(); app.preload()\n"
        "app.pen_down(140, 40); app.pen_move(140, 240); app.pen_up()\n"
        "assert app.predict() is not None, app.status_text\n"
        "print('tensorflow' in sys.modules, 'scipy' in sys.modules)\n"
    )
    env = {**os.environ, "MNIST_HITL_HOME": str(home_with_model.home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_predict_stores_what_the_strokes_show_and_displays_it(app: DrawingApp, home_with_model: Settings) -> None:
    draw_with_mouse(app, SEVEN)
    assert len(app.strokes) == 1 and app.strokes[0][0] == (60.0, 50.0) and app.strokes[0][-1] == (150.0, 250.0)
    assert np.array_equal(app.picture(), render_strokes(app.strokes))

    app.predict_button.click()
    result = app.result
    assert result is not None
    with Store(home_with_model.db_path) as store:
        row = store.get_prediction(result.prediction_id)
    assert row.model_version == deployed_model(home_with_model.models_dir).version == result.model_version
    assert row.predicted_label == result.predicted_label
    assert Image.open(io.BytesIO(row.png)).size == (28, 28)
    assert row.source == "app"

    assert f'data-label="{result.predicted_label}"' in app.prediction.value
    shown = bars(app)
    assert len(shown) == 10 and abs(sum(shown) - 1) < 1e-3 and int(np.argmax(shown)) == result.predicted_label
    assert f"{result.confidence:.1%}" in app.confidence.value
    assert f'data-version="{result.model_version}"' in app.model_version.value
    assert f"prediction {result.prediction_id}" in app.status_text
    assert Image.open(io.BytesIO(app.digit_image.value)).size == (140, 140)


def test_correct_and_save_stores_the_chosen_digit(app: DrawingApp, home_with_model: Settings) -> None:
    draw_with_mouse(app, SEVEN)
    app.predict_button.click()
    pid = app.result.prediction_id
    chosen = (app.result.predicted_label + 1) % 10

    app.correct_button.click()  # no digit chosen yet: nothing stored
    assert "choose the right digit" in app.status_text
    app.digit_buttons[chosen].click()
    assert app.digit_buttons[chosen].button_style == "info"
    app.correct_button.click()

    with Store(home_with_model.db_path) as store:
        labels = store.labels(pid)
    assert [(label.label, label.kind) for label in labels] == [(chosen, "correct")]
    assert app.status_text == f"saved correction: prediction {pid} is a {chosen}"


def test_confirm_stores_the_predicted_digit(app: DrawingApp, home_with_model: Settings) -> None:
    draw_with_mouse(app, [(140, 30), (140, 250)])
    app.predict_button.click()
    pid, predicted = app.result.prediction_id, app.result.predicted_label
    app.confirm_button.click()
    app.digit_buttons[predicted].click()  # choosing the predicted digit is a confirmation too
    app.correct_button.click()
    with Store(home_with_model.db_path) as store:
        labels = store.labels(pid)
    assert [(label.label, label.kind) for label in labels] == [(predicted, "confirm"), (predicted, "confirm")]
    assert f"prediction {pid} is a {predicted}" in app.status_text


def test_labels_need_a_prediction_first(app: DrawingApp, home_with_model: Settings) -> None:
    app.confirm_button.click()
    assert "draw a digit and press Predict first" in app.status_text
    app.digit_buttons[3].click()
    app.correct_button.click()
    assert "draw a digit and press Predict first" in app.status_text
    with Store(home_with_model.db_path) as store:
        assert store.counts()["labels"] == 0


def test_empty_canvas_is_refused_and_nothing_is_stored(app: DrawingApp, home_with_model: Settings) -> None:
    app.predict_button.click()
    assert app.result is None
    assert app.status_text == "the drawing is empty: draw a digit first"
    assert "hitl-error" in app.status._dom_classes
    with Store(home_with_model.db_path) as store:
        assert store.counts()["predictions"] == 0


def test_clear_forgets_the_drawing_and_the_answer(app: DrawingApp, home_with_model: Settings) -> None:
    draw_with_mouse(app, SEVEN)
    app.predict_button.click()
    assert "hitl-error" not in app.status._dom_classes
    app.clear_button.click()
    assert app.strokes == [] and app.result is None
    assert 'data-label=""' in app.prediction.value and sum(bars(app)) == 0
    app.predict_button.click()
    assert app.status_text == "the drawing is empty: draw a digit first"
    with Store(home_with_model.db_path) as store:
        assert store.counts()["predictions"] == 1


def test_without_a_model_the_app_says_so(home: Settings) -> None:
    app = DrawingApp(home)
    app.preload()
    assert "no model deployed" in app.model_version.value
    app.pen_down(140, 40)
    app.pen_move(140, 240)
    app.pen_up()
    app.predict_button.click()
    assert app.result is None and "no model is deployed" in app.status_text
    app.reload_button.click()
    assert "no model is deployed" in app.status_text
    with Store(home.db_path) as store:
        assert store.counts()["predictions"] == 0


def test_a_newly_deployed_model_is_used_by_the_next_prediction(
    app: DrawingApp, home_with_model: Settings, redeploy
) -> None:
    draw_with_mouse(app, SEVEN)
    first = app.predict()
    version = redeploy(home_with_model.models_dir, "20990101-000000-000")
    second = app.predict()
    assert first.model_version != version and second.model_version == version
    assert f'data-version="{version}"' in app.model_version.value
    with Store(home_with_model.db_path) as store:
        assert store.get_prediction(second.prediction_id).model_version == version


def test_reload_shows_the_deployed_version(app: DrawingApp, home_with_model: Settings, redeploy) -> None:
    version = redeploy(home_with_model.models_dir, "20990101-000000-001")
    app.reload_button.click()
    assert f'data-version="{version}"' in app.model_version.value
    assert app.status_text == f"reloaded the deployed model: version {version}"


def test_touch_draws_like_the_mouse(app: DrawingApp) -> None:
    send(app, "touch_start", touches=[{"x": 140, "y": 30}])
    for y in range(40, 260, 20):
        send(app, "touch_move", touches=[{"x": 140, "y": y}])
    send(app, "touch_end", touches=[])
    send(app, "touch_move", touches=[{"x": 10, "y": 10}])  # after the finger left: ignored
    assert len(app.strokes) == 1 and len(app.strokes[0]) == 12
    assert app.predict() is not None


def test_moves_without_the_button_pressed_draw_nothing(app: DrawingApp) -> None:
    send(app, "mouse_move", x=10, y=10)
    send(app, "mouse_down", x=50, y=50)
    send(app, "mouse_move", x=60, y=60)
    send(app, "mouse_out", x=70, y=70)  # leaving the canvas ends the stroke
    send(app, "mouse_move", x=200, y=200)
    assert app.strokes == [[(50.0, 50.0), (60.0, 60.0), (70.0, 70.0)]]


def test_nothing_is_drawn_before_the_client_is_ready(app: DrawingApp, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = []
    manager = app.canvas._canvas_manager
    original = manager.send_command

    def record(canvas, command, buffers=[]):  # noqa: B006 - the signature of ipycanvas' method
        if canvas is app.canvas:
            sent.append(command)
        return original(canvas, command, buffers)

    monkeypatch.setattr(manager, "send_command", record)
    draw_with_mouse(app, SEVEN)
    app.clear_button.click()
    draw_with_mouse(app, SEVEN)
    assert sent == [] and "hitl-ready" not in app.canvas._dom_classes

    send(app, "client_ready")  # the page's canvas exists: set it up and replay the strokes
    assert sent and "hitl-ready" in app.canvas._dom_classes
    replayed = len(sent)
    send(app, "mouse_down", x=20, y=20)
    send(app, "mouse_move", x=30, y=30)
    assert len(sent) > replayed


def test_probability_bars_and_digit_picture() -> None:
    chart = probability_bars([0.05] * 9 + [0.55])
    assert len(re.findall(r'data-digit="\d"', chart)) == 10 and 'class="hitl-bar hitl-top" data-digit="9"' in chart
    digit = np.zeros((28, 28), dtype=np.float32)
    digit[10:18, 13:15] = 1.0
    picture = np.asarray(Image.open(io.BytesIO(digit_png(digit))))
    assert picture.shape == (140, 140) and picture[50:90, 65:75].min() == 255 and picture[:50].max() == 0


def test_the_notebook_executes_headless(home_with_model: Settings) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert os.environ["MNIST_HITL_HOME"] == str(home_with_model.home)  # the kernel inherits it
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in outputs)
    assert not any(
        output.output_type in ("error", "stream") and output.get("name") != "stdout" for output in outputs
    ), outputs


def test_a_broken_new_deployment_leaves_the_page_on_the_model_still_serving(
    app: DrawingApp, home_with_model: Settings
) -> None:
    serving = deployed_model(home_with_model.models_dir).version
    draw_with_mouse(app, SEVEN)
    assert app.predict().model_version == serving  # the app holds the deployed model
    pointer = home_with_model.models_dir / "latest.json"
    info = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**info, "version": "20990101-000000-000", "tflite_sha256": "0" * 64}))
    app.reload_button.click()
    assert "checksum" in app.status_text and f"still serving version {serving}" in app.status_text
    assert f'data-version="{serving}"' in app.model_version.value
    draw_with_mouse(app, SEVEN)
    assert app.predict().model_version == serving


def test_a_store_that_refuses_the_write_shows_one_line_and_no_answer(
    app: DrawingApp, home_with_model: Settings, monkeypatch
) -> None:
    def refuse(*args, **kwargs):
        raise StoreError("the store is read-only: make it writable and try again")

    monkeypatch.setattr(app.workbench.store, "record_prediction", refuse)
    draw_with_mouse(app, SEVEN)
    app.predict_button.click()
    assert app.result is None
    assert app.status_text == "the store is read-only: make it writable and try again"
    assert "hitl-error" in app.status._dom_classes
