"""End to end in a real browser: the Review tab driven by the keyboard, and both tabs on a phone.

Needs Chromium at ``/usr/bin/chromium`` (or ``MNIST_HITL_CHROMIUM``) and the ``playwright``
package, like tests/test_browser.py; the tests fail rather than skip when they are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_hitl.app.command import RunningApp, running_app
from mnist_hitl.config import Settings
from mnist_hitl.store import Store
from tests.support.helpers import import_digits

pytestmark = pytest.mark.browser

POOL = 12
PHONE = {"viewport": {"width": 412, "height": 915}, "has_touch": True, "is_mobile": True, "device_scale_factor": 2}
SEVEN = [(60, 50), (220, 50), (150, 250)]
SMALLER_SIDES = "els => els.map(el => el.getBoundingClientRect()).map(r => Math.min(r.width, r.height))"


@pytest.fixture
def review_app(home_with_model: Settings, tmp_path: Path) -> Iterator[RunningApp]:
    """The app with a pool of unlabelled imported drawings, stored before its kernels start."""
    import_digits(home_with_model, POOL)
    with running_app(home_with_model, log=tmp_path / "voila.log") as app:
        yield app


def new_page(browser, errors: list[str], **context_options):
    page = browser.new_context(**context_options).new_page()
    page.set_default_timeout(60_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def open_review(page, app: RunningApp) -> None:
    page.goto(app.url)
    page.wait_for_selector(".hitl-canvas.hitl-ready")
    page.click(".hitl-tabs .lm-TabBar-tab:has-text('Review')")
    page.wait_for_selector(".hitl-review-info [data-prediction-id]:not([data-prediction-id=''])")


def shown(page) -> dict:
    return page.eval_on_selector(
        ".hitl-review-info [data-prediction-id]",
        "el => ({id: Number(el.dataset.predictionId), predicted: Number(el.dataset.predicted),"
        " changing: el.dataset.changing})",
    )


def press(page, key: str, kind: str) -> dict:
    """Press a key; wait until the kernel has acted on it (the status names it); returns the drawing shown then."""
    before = page.inner_html(".hitl-review-status")
    page.keyboard.press(key)
    page.wait_for_function(
        "([before, kind]) => { const el = document.querySelector('.hitl-review-status');"
        " return el.innerHTML !== before && el.querySelector(`[data-kind='${kind}']`); }",
        arg=[before, kind],
    )
    return shown(page)


def labels(settings: Settings, prediction_id: int) -> list[tuple[int | None, str]]:
    with Store(settings.db_path) as store:
        return [(label.label, label.kind) for label in store.labels(prediction_id)]


def test_the_review_tab_is_driven_by_the_keyboard(browser, review_app: RunningApp) -> None:
    errors: list[str] = []
    page = new_page(browser, errors, viewport={"width": 1100, "height": 1000})
    open_review(page, review_app)
    assert page.locator(".hitl-tabs.ipyevents-watched").count() == 1  # the pointer is on the tabs: keys are live
    assert page.locator(".hitl-keys-on").is_visible() and not page.locator(".hitl-keys-off").is_visible()

    first = shown(page)
    wrong = (first["predicted"] + 1) % 10
    second = press(page, str(wrong), "correct")
    assert second["id"] != first["id"]
    third = press(page, "Enter", "confirm")
    fourth = press(page, "s", "skip")
    assert press(page, "Backspace", "undo")["id"] == third["id"]  # the skip undone: the drawing is back
    assert press(page, "Enter", "confirm")["id"] == fourth["id"]
    assert press(page, "Backspace", "undo")["id"] == third["id"]  # the confirmation undone
    other = (third["predicted"] + 2) % 10
    assert press(page, str(other), "correct")["id"] == fourth["id"]

    page.click(f".hitl-review-recent button:has-text('#{first['id']}:')")  # change the first decision
    page.wait_for_selector(f".hitl-review-info [data-prediction-id='{first['id']}'][data-changing='1']")
    assert press(page, str(first["predicted"]), "confirm")["id"] == fourth["id"]

    settings = review_app.settings
    assert labels(settings, first["id"]) == [(wrong, "correct"), (first["predicted"], "confirm")]
    assert labels(settings, second["id"]) == [(second["predicted"], "confirm")]
    assert labels(settings, third["id"]) == [(third["predicted"], "confirm"), (None, "undo"), (other, "correct")]
    assert labels(settings, fourth["id"]) == []
    recent = page.locator(".hitl-review-recent button:visible").all_inner_texts()
    assert [text.strip() for text in recent] == [
        f"#{first['id']}: {first['predicted']} (confirm)",
        f"#{third['id']}: {other} (correct)",
        f"#{second['id']}: {second['predicted']} (confirm)",
    ]
    progress = page.eval_on_selector(".hitl-review-progress [data-labelled]", "el => ({...el.dataset})")
    assert progress["labelled"] == "3" and progress["left"] == str(POOL - 3) and progress["accuracy"]
    page.context.close()
    assert not errors, errors


def touch_draw(page, points, steps: int = 8) -> None:
    """Draw a polyline on the canvas with a finger: real touch events through the DevTools protocol."""
    box = page.locator(".hitl-canvas").bounding_box()
    cdp = page.context.new_cdp_session(page)

    def touch(kind: str, x: float, y: float) -> None:
        touch_points = [] if kind == "touchEnd" else [{"x": box["x"] + x, "y": box["y"] + y}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})

    (x, y), rest = points[0], points[1:]
    touch("touchStart", x, y)
    for nx, ny in rest:
        for i in range(1, steps + 1):
            touch("touchMove", x + (nx - x) * i / steps, y + (ny - y) * i / steps)
        x, y = nx, ny
    touch("touchEnd", x, y)


def inside(page, selector: str, width: int) -> list[str]:
    """The elements matching ``selector`` that stick out of [0, width] or are smaller than a finger (40 px)."""
    return page.eval_on_selector_all(
        selector,
        """(els, width) => els.flatMap(el => {
        const r = el.getBoundingClientRect();
        return r.left < 0 || r.right > width ? [`${el.className} at ${r.left}-${r.right}`] : []; })""",
        width,
    )


def test_a_phone_draws_with_a_finger_and_sees_every_control(browser, review_app: RunningApp) -> None:
    errors: list[str] = []
    page = new_page(browser, errors, **PHONE)
    page.goto(review_app.url)
    page.wait_for_selector(".hitl-canvas.hitl-ready")
    touch_draw(page, SEVEN)
    page.locator(".hitl-predict").tap()
    page.wait_for_selector(".hitl-status [data-prediction-id]")
    width = PHONE["viewport"]["width"]

    canvas, answer = page.locator(".hitl-canvas").bounding_box(), page.locator(".hitl-answer").first.bounding_box()
    assert canvas["x"] >= 0 and canvas["x"] + canvas["width"] <= width and canvas["width"] >= 280  # whole, unscaled
    assert answer["y"] >= canvas["y"] + canvas["height"] or answer["x"] >= canvas["x"] + canvas["width"]
    right_edge = [canvas["x"] + canvas["width"] - 5, canvas["y"] + canvas["height"] / 2]
    assert page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).closest('.hitl-canvas') !== null", right_edge
    )  # nothing covers the canvas' right part
    controls = ".hitl-predict, .hitl-digit, .hitl-correct, .hitl-confirm, .hitl-probabilities .hitl-bar-value"
    assert inside(page, controls, width) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    sizes = page.eval_on_selector_all(".hitl-digit", SMALLER_SIDES)
    assert len(sizes) == 10 and min(sizes) >= 40
    bars = page.eval_on_selector_all(".hitl-probabilities .hitl-bar-value", "els => els.map(el => el.innerText)")
    assert len(bars) == 10 and all(text.endswith("%") for text in bars)
    pid = int(page.eval_on_selector(".hitl-status [data-prediction-id]", "el => el.dataset.predictionId"))

    page.locator(".hitl-confirm").tap()
    page.wait_for_selector(".hitl-status [data-kind='confirm']")
    assert [kind for _, kind in labels(review_app.settings, pid)] == ["confirm"]

    page.locator(".hitl-tabs .lm-TabBar-tab:has-text('Review')").tap()
    page.wait_for_selector(".hitl-review-info [data-prediction-id]:not([data-prediction-id=''])")
    review_controls = (
        ".hitl-review-picture, .hitl-review-guesses, .hitl-review-digit, .hitl-review-confirm,"
        " .hitl-review-undo, .hitl-review-skip, .hitl-review-train"
    )
    assert inside(page, review_controls, width) == []
    keys = page.eval_on_selector_all(".hitl-review .jupyter-button:visible", SMALLER_SIDES)
    assert keys and min(keys) >= 40
    item = shown(page)
    digit = (item["predicted"] + 1) % 10
    page.locator(f".hitl-review-digit-{digit}").tap()
    page.wait_for_selector(f".hitl-review-status [data-prediction-id='{item['id']}'][data-kind='correct']")
    assert labels(review_app.settings, item["id"]) == [(digit, "correct")]
    page.context.close()
    assert not errors, errors
