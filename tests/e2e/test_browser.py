"""End to end in a real browser: Voila serves the drawing app, headless Chromium draws on it.

Needs Chromium at ``/usr/bin/chromium`` (or ``MNIST_HITL_CHROMIUM``) and the ``playwright``
package; the test fails rather than skips when they are missing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mnist_hitl.app.command import RunningApp, running_app
from mnist_hitl.config import Settings
from mnist_hitl.store import Store

pytestmark = pytest.mark.browser

SEVEN = [(60, 50), (220, 50), (150, 250)]
ONE = [(130, 40), (150, 30), (150, 250)]


@pytest.fixture
def voila_app(home_with_model: Settings, tmp_path: Path) -> Iterator[RunningApp]:
    with running_app(home_with_model, log=tmp_path / "voila.log") as app:
        yield app


@pytest.fixture
def page(browser, voila_app: RunningApp):
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, errors


def open_app(page, app: RunningApp) -> float:
    """Load the app and wait until its canvas can be drawn on; returns seconds since navigation start."""
    page.goto(app.url)
    page.wait_for_selector(".hitl-canvas.hitl-ready")
    seconds = page.evaluate("performance.now()") / 1000
    print(f"\npage load to usable canvas: {seconds:.2f} s")
    return seconds


def draw(page, points, steps: int = 10) -> None:
    """Draw a polyline on the canvas with the mouse, in canvas pixel coordinates."""
    box = page.locator(".hitl-canvas").bounding_box()
    scale_x, scale_y = box["width"] / 280, box["height"] / 280
    x, y = points[0]
    page.mouse.move(box["x"] + x * scale_x, box["y"] + y * scale_y)
    page.mouse.down()
    for nx, ny in points[1:]:
        page.mouse.move(box["x"] + nx * scale_x, box["y"] + ny * scale_y, steps=steps)
    page.mouse.up()


INK_SHOWN = """least => {
    const canvas = document.querySelector('.hitl-canvas');
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] > 200) n++;
    return n >= least;
}"""


def shown_prediction_id(page) -> str:
    return page.eval_on_selector(
        ".hitl-status", "el => el.querySelector('[data-prediction-id]')?.dataset.predictionId ?? ''"
    )


def press_predict(page) -> int:
    """Press Predict and wait for the answer; returns the shown prediction id."""
    before = shown_prediction_id(page)
    page.click(".hitl-predict")
    page.wait_for_function(
        """before => { const el = document.querySelector('.hitl-status [data-prediction-id]');
                       return el && el.dataset.predictionId !== before; }""",
        arg=before,
    )
    return int(shown_prediction_id(page))


def shown_answer(page) -> dict:
    return page.evaluate("""() => ({
        label: document.querySelector('.hitl-prediction [data-label]').dataset.label,
        confidence: document.querySelector('.hitl-confidence [data-confidence]').dataset.confidence,
        bars: [...document.querySelectorAll('.hitl-probabilities .hitl-bar')]
              .map(el => [Number(el.dataset.digit), Number(el.dataset.p)]),
        version: document.querySelector('.hitl-model-version [data-version]').dataset.version,
        image: document.querySelector('.hitl-digit-image').naturalWidth,
    })""")


def test_draw_predict_correct_and_pick_up_a_new_model(page, voila_app: RunningApp, redeploy) -> None:
    settings = voila_app.settings
    open_app(page, voila_app)
    first_version = json.loads((settings.models_dir / "latest.json").read_text())["version"]
    assert page.inner_text(".hitl-model-version").strip() == f"model {first_version}"

    draw(page, SEVEN)
    pid = press_predict(page)
    page.wait_for_function(INK_SHOWN, arg=2000, timeout=10_000)  # the kernel's strokes reached the canvas

    answer = shown_answer(page)
    probabilities = [p for _, p in sorted(answer["bars"])]
    predicted = int(answer["label"])
    assert [digit for digit, _ in sorted(answer["bars"])] == list(range(10))
    assert abs(sum(probabilities) - 1) < 1e-3
    assert predicted == max(range(10), key=probabilities.__getitem__)
    assert abs(float(answer["confidence"]) - probabilities[predicted]) < 1e-5
    assert answer["version"] == first_version and answer["image"] == 140
    assert page.inner_text(".hitl-prediction").strip() == str(predicted)
    print(f"drew a 7, the model read {predicted} ({probabilities[predicted]:.1%}) as prediction {pid}")

    chosen = (predicted + 1) % 10
    page.click(f".hitl-digit-{chosen}")
    page.click(".hitl-correct")
    page.wait_for_function(
        "text => document.querySelector('.hitl-status').innerText.includes(text)",
        arg=f"saved correction: prediction {pid} is a {chosen}",
    )

    with Store(settings.db_path) as store:
        row = store.get_prediction(pid)
        labels = store.labels(pid)
    assert row.model_version == first_version and row.predicted_label == predicted
    assert Image.open(io.BytesIO(row.png)).size == (28, 28)
    assert abs(sum(row.probabilities) - 1) < 1e-3
    assert [(label.label, label.kind) for label in labels] == [(chosen, "correct")]

    new_version = redeploy(settings.models_dir, "20990101-000000-000")
    page.click(".hitl-clear")
    page.wait_for_function("() => !document.querySelector('.hitl-status [data-prediction-id]')")
    draw(page, ONE)
    second = press_predict(page)
    assert second != pid
    assert shown_answer(page)["version"] == new_version
    assert page.inner_text(".hitl-model-version").strip() == f"model {new_version}"
    with Store(settings.db_path) as store:
        assert store.get_prediction(second).model_version == new_version


def test_predict_on_an_empty_canvas_says_so_and_stores_nothing(page, voila_app: RunningApp) -> None:
    open_app(page, voila_app)
    page.click(".hitl-predict")
    page.wait_for_selector(".hitl-status.hitl-error")
    assert page.inner_text(".hitl-status").strip() == "the drawing is empty: draw a digit first"
    assert page.inner_text(".hitl-prediction").strip() == "\u2013"
    with Store(voila_app.settings.db_path) as store:
        assert store.counts()["predictions"] == 0
