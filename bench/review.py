"""Benchmark: the Review tab at keyboard speed, in a real browser.

Serves the app with Voila (preheated kernels, as ``mnist-hitl app`` does) from a temporary
home holding a copy of the deployed model (or a freshly trained one) and a pool of
unlabelled pictures (bundled MNIST holdout digits, stored as imports), opens the Review
tab in headless Chromium and presses keys:

* key press to next drawing shown: the page records when the key went down and when the
  next drawing's picture was painted (the frame after its ``<img>`` got the new source
  and decoded); p50 / p90 / max over ``--presses`` presses of Enter, one at a time;
* labels per minute at a human pace: ``--think`` seconds looking at each drawing, then a
  key (digits and Enter), for ``--paced`` drawings; the rate counts every label the store
  received.

Prints figures (goal: p50 <= 300 ms) and writes ``bench/results/review.json``; asserts nothing.

    .venv/bin/python bench/review.py [--home DIR] [--presses 30] [--paced 30] [--think 0.5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from support import CHROMIUM, CHROMIUM_ARGS, deployed_models, home_with_model, machine, report

WATCH = """() => {
    const picture = document.querySelector('.hitl-review-picture');
    window.hitlTimes = [];
    document.addEventListener('keydown', () => { window.hitlPressed = performance.now(); }, true);
    new MutationObserver(() => {
        const pressed = window.hitlPressed;
        picture.decode().catch(() => null).then(() => requestAnimationFrame(() => {
            if (pressed !== undefined) window.hitlTimes.push(performance.now() - pressed);
        }));
    }).observe(picture, {attributes: true, attributeFilter: ['src']});
}"""
SHOWN_ID = "() => document.querySelector('.hitl-review-info [data-prediction-id]')?.dataset.predictionId ?? ''"


def stock_pool(home: Path, count: int) -> None:
    """Store ``count`` unlabelled pictures in the home, as ``mnist-hitl import`` would."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png
    from mnist_hitl.workbench import Workbench

    with Workbench(get_settings(home=home), source="import") as workbench:
        for digit in load_bundled().x_test[:count]:
            workbench.predict_png(encode_png(digit))


def press_and_wait(page, key: str) -> None:
    before = page.evaluate(SHOWN_ID)
    page.keyboard.press(key)
    page.wait_for_function(f"before => ({SHOWN_ID})() !== before", arg=before, polling="raf")


def latency(page, presses: int) -> list[float]:
    """Milliseconds from key down to the next drawing painted, for ``presses`` presses of Enter."""
    page.evaluate(WATCH)
    for _ in range(presses):
        count = page.evaluate("window.hitlTimes.length")
        press_and_wait(page, "Enter")
        page.wait_for_function("n => window.hitlTimes.length > n", arg=count)
        time.sleep(0.15)  # let the kernel finish the label write and the refill, as a person's pause would
    return page.evaluate("window.hitlTimes")[-presses:]


def paced(page, drawings: int, think: float) -> float:
    """Seconds to label ``drawings`` drawings, looking ``think`` seconds at each."""
    started = time.perf_counter()
    for n in range(drawings):
        time.sleep(think)
        predicted = page.eval_on_selector(".hitl-review-info [data-prediction-id]", "el => el.dataset.predicted")
        press_and_wait(page, "Enter" if n % 3 else predicted)
    return time.perf_counter() - started


def labels_in(home: Path) -> int:
    from mnist_hitl.store import Store

    with Store(home / "store.sqlite") as store:
        return store.counts()["labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home whose deployed model is used (default: MNIST_HITL_HOME)")
    parser.add_argument("--presses", type=int, default=30, help="key presses timed")
    parser.add_argument("--paced", type=int, default=30, help="drawings labelled at a human pace")
    parser.add_argument("--think", type=float, default=0.5, help="seconds a person looks at a drawing")
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from mnist_hitl.app.command import running_app
    from mnist_hitl.config import get_settings

    home = home_with_model(deployed_models(args.home), prefix="mnist-hitl-bench-review-")
    pool = args.presses + args.paced + 20
    stock_pool(home, pool)
    figures: dict[str, object] = {"pool": pool}
    try:
        with running_app(get_settings(), log=home / "voila.log") as app, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1100, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(app.url)
            page.wait_for_selector(".hitl-canvas.hitl-ready", timeout=120_000)
            page.click(".hitl-tabs .lm-TabBar-tab:has-text('Review')")
            page.wait_for_selector(".hitl-review-info [data-prediction-id]:not([data-prediction-id=''])")
            times = latency(page, args.presses)
            figures["key_to_next_drawing_ms_p50"] = statistics.median(times)
            figures["key_to_next_drawing_ms_p90"] = statistics.quantiles(times, n=10)[-1]
            figures["key_to_next_drawing_ms_max"] = max(times)
            before = labels_in(home)
            seconds = paced(page, args.paced, args.think)
            page.wait_for_timeout(500)
            labelled = labels_in(home) - before
            figures["paced_think_s"] = args.think
            figures["paced_labels"] = labelled
            figures["labels_per_minute_at_a_human_pace"] = labelled / seconds * 60
            figures["labels_per_minute_ceiling_think_only"] = 60 / args.think
            browser.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report("review", {**figures, **machine()}, decimals=1)


if __name__ == "__main__":
    main()
