"""The Review tab's logic, driven in-process: keys, undo, skip, changing a decision; what the store keeps."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mnist_hitl.app.page import REVIEW, AppPage
from mnist_hitl.app.review import BATCH, ReviewView
from mnist_hitl.config import Settings
from mnist_hitl.learning.loop import trigger
from mnist_hitl.learning.loop.lock import cycle_lock
from mnist_hitl.store import Store
from tests.support.helpers import import_digits

POOL = 12


def rows(settings: Settings, prediction_id: int) -> list[tuple[int | None, str]]:
    with Store(settings.db_path) as store:
        return [(label.label, label.kind) for label in store.labels(prediction_id)]


def data(widget, name: str) -> str:
    match = re.search(rf'data-{name}="([^"]*)"', widget.value)
    return match.group(1) if match else ""


def other_than(digit: int) -> int:
    return (digit + 1) % 10


@pytest.fixture
def pool(home_with_model: Settings) -> list[int]:
    return import_digits(home_with_model, POOL)


@pytest.fixture
def view(home_with_model: Settings, pool: list[int]):
    review = ReviewView(home_with_model)
    review.reload()
    yield review
    review.workbench.close()


def test_it_shows_the_queue_first_with_the_models_three_best_guesses(view: ReviewView, pool: list[int]) -> None:
    queue = [item.prediction_id for item in view.workbench.queue(limit=BATCH)]  # what the view asked for
    assert [view.current.prediction_id, *(item.prediction_id for item in view.buffer)] == queue
    assert view.picture.value == view.current.png and view.small.value == view.current.png
    guesses = [(int(d), float(p)) for d, p in re.findall(r'data-digit="(\d)" data-p="([0-9.]+)"', view.guesses.value)]
    best = sorted(range(10), key=lambda d: -view.current.probabilities[d])[:3]
    assert [d for d, _ in guesses] == best and guesses[0][0] == view.current.predicted_label
    assert data(view.info, "prediction-id") == str(view.current.prediction_id)
    assert data(view.progress, "labelled") == "0" and data(view.progress, "left") == str(POOL)


def test_digit_keys_label_the_drawing_and_show_the_next(view: ReviewView, home_with_model: Settings) -> None:
    first = view.current
    wrong = other_than(first.predicted_label)
    view.press(str(wrong))
    second = view.current
    assert second.prediction_id != first.prediction_id
    view.press(str(second.predicted_label))  # the model's answer: a confirmation
    third = view.current
    view.press("Enter")
    assert rows(home_with_model, first.prediction_id) == [(wrong, "correct")]
    assert rows(home_with_model, second.prediction_id) == [(second.predicted_label, "confirm")]
    assert rows(home_with_model, third.prediction_id) == [(third.predicted_label, "confirm")]
    assert view.status_text == f"saved: #{third.prediction_id} is a {third.predicted_label}, a confirm"
    assert data(view.progress, "labelled") == "3" and data(view.progress, "left") == str(POOL - 3)
    assert [b.description for b in view.recent_buttons[:3]] == [
        f"#{third.prediction_id}: {third.predicted_label} (confirm)",
        f"#{second.prediction_id}: {second.predicted_label} (confirm)",
        f"#{first.prediction_id}: {wrong} (correct)",
    ]
    assert "hitl-empty" in view.recent_buttons[3]._dom_classes
    view.press("x")  # not a key of the tab: nothing happens
    assert view.current is not third and rows(home_with_model, view.current.prediction_id) == []


def test_the_next_drawing_is_shown_before_the_label_is_written(view: ReviewView, monkeypatch) -> None:
    first, shown_while_writing = view.current, []
    write = view.workbench.label

    def label(prediction_id, digit, kind, reviewer):
        shown_while_writing.append(data(view.info, "prediction-id"))
        return write(prediction_id, digit, kind, reviewer)

    monkeypatch.setattr(view.workbench, "label", label)
    view.press("Enter")
    assert shown_while_writing == [str(view.current.prediction_id)] != [str(first.prediction_id)]


def test_backspace_undoes_the_last_decision_and_shows_its_drawing_again(
    view: ReviewView, home_with_model: Settings
) -> None:
    first = view.current
    view.press("Enter")
    after = view.current
    view.press("Backspace")
    assert view.current is first and data(view.info, "prediction-id") == str(first.prediction_id)
    assert rows(home_with_model, first.prediction_id) == [(first.predicted_label, "confirm"), (None, "undo")]
    assert data(view.progress, "labelled") == "0" and data(view.progress, "left") == str(POOL)
    assert view.workbench.history(first.prediction_id)[-1]["kind"] == "undo"
    view.press(str(other_than(first.predicted_label)))  # decide again: a new row, the history kept
    assert rows(home_with_model, first.prediction_id) == [
        (first.predicted_label, "confirm"),
        (None, "undo"),
        (other_than(first.predicted_label), "correct"),
    ]
    assert view.current is after
    view.press("Backspace")
    view.press("Backspace")  # nothing left to undo
    assert view.status_text == "nothing to undo"
    assert len(rows(home_with_model, first.prediction_id)) == 4


def test_s_skips_without_writing_and_the_drawing_stays_out_of_this_session(
    view: ReviewView, home_with_model: Settings
) -> None:
    skipped = view.current
    view.press("s")
    assert view.current is not skipped and rows(home_with_model, skipped.prediction_id) == []
    assert view.recent_buttons[0].description == f"#{skipped.prediction_id}: skipped"
    for _ in range(POOL - 1):
        view.press("Enter")
    assert view.current is None and data(view.info, "prediction-id") == ""  # the skipped one did not come back
    assert "nothing left to review" in view.info.value
    with Store(home_with_model.db_path) as store:
        assert len(store.labels()) == POOL - 1
    view.press("Enter")
    assert view.status_text == "nothing to confirm: the queue is empty"


def test_undoing_a_skip_shows_the_drawing_again(view: ReviewView, home_with_model: Settings) -> None:
    skipped = view.current
    view.press("s")
    view.press("Backspace")
    assert view.current is skipped and rows(home_with_model, skipped.prediction_id) == []
    view.press("Enter")
    assert rows(home_with_model, skipped.prediction_id) == [(skipped.predicted_label, "confirm")]


def test_an_earlier_decision_can_be_changed(view: ReviewView, home_with_model: Settings) -> None:
    decided = []
    for _ in range(3):
        decided.append(view.current)
        view.press("Enter")
    waiting = view.current
    view.recent_buttons[1].click()  # the second most recent decision
    target = decided[1]
    assert view.current is target and data(view.info, "changing") == "1"
    assert f"labels so far: {target.predicted_label} (confirm)" in view.info.value  # its history, in order
    assert view.recent_buttons[1].button_style == "info"
    new = other_than(target.predicted_label)
    view.press(str(new))
    assert rows(home_with_model, target.prediction_id) == [(target.predicted_label, "confirm"), (new, "correct")]
    assert (
        view.status_text == f"saved: #{target.prediction_id} is a {new}, a correct (was {target.predicted_label}"
        " (confirm))"
    )
    assert view.current is waiting  # back where the person was
    assert [b.description for b in view.recent_buttons[:3]] == [
        f"#{target.prediction_id}: {new} (correct)",
        f"#{decided[2].prediction_id}: {decided[2].predicted_label} (confirm)",
        f"#{decided[0].prediction_id}: {decided[0].predicted_label} (confirm)",
    ]
    assert data(view.progress, "labelled") == "3"

    view.change(2)  # then keep it as it was: s (or Backspace) leaves it
    assert view.current is decided[0]
    view.press("s")
    assert view.current is waiting and rows(home_with_model, decided[0].prediction_id) == [
        (decided[0].predicted_label, "confirm")
    ]
    with Store(home_with_model.db_path) as store:
        latest = store.current_labels()
    assert latest[target.prediction_id].label == new


def test_a_newly_deployed_model_is_shown_and_scores_the_queue(
    view: ReviewView, home_with_model: Settings, redeploy
) -> None:
    first_version = data(view.model, "version")
    assert first_version and "hitl-changed" not in view.model.value
    version = redeploy(home_with_model.models_dir, "20990101-000000-000")
    view.press("Enter")
    assert data(view.model, "version") == version and data(view.model, "previous") == first_version
    assert all(item.model_version == version for item in view.buffer)


def test_train_now_starts_one_cycle_at_a_time(home_with_model: Settings) -> None:
    with Store(home_with_model.db_path) as store:
        for prediction_id in import_digits(home_with_model, 5):
            store.add_label(prediction_id, 1, "correct")
    view = ReviewView(home_with_model, train_command=[sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert view.train_now() is True
        assert view.status_text.startswith("a learning cycle was started")
        started = view.cycle
        # asked the way the label-count trigger asks: the trigger now waits for that cycle instead of asking again
        asked = []
        assert trigger.check_and_request(home_with_model.replace(retrain_every_labels=1), asked.append) is None
        assert asked == []
        assert view.train_now() is False  # the one started here is still running (it has not locked yet)
        assert view.status_text.startswith("no new cycle: one is already running") and view.cycle is started
        started.kill()
        started.wait(timeout=10)
        with cycle_lock(home_with_model):  # a cycle started elsewhere: the schedule, the CLI
            assert view.train_now() is False
        assert view.train_now() is True and view.cycle is not started
    finally:
        if view.cycle is not None:
            view.cycle.kill()
            view.cycle.wait(timeout=10)
        view.workbench.close()


def test_keys_reach_the_review_tab_only_while_it_is_open(home_with_model: Settings, pool: list[int]) -> None:
    page = AppPage(home_with_model)
    page.preload()
    review = page.review
    first = review.current
    page.on_key({"key": "Enter"})  # the Draw tab is open
    assert review.current is first and rows(home_with_model, first.prediction_id) == []
    page.tabs.selected_index = REVIEW
    page.on_key({"key": "Enter", "repeat": True})  # a held key does not label many drawings
    page.on_key({"key": "s", "ctrlKey": True})
    assert review.current is first
    page.on_key({"key": "Enter"})
    assert rows(home_with_model, first.prediction_id) == [(first.predicted_label, "confirm")]
    assert "hitl-canvas" in page.draw.canvas._dom_classes and "hitl-tabs" in page.tabs._dom_classes
    page.draw.workbench.close()


def test_an_empty_queue_says_so(home_with_model: Settings) -> None:
    view = ReviewView(home_with_model)
    view.reload()
    assert view.current is None and "nothing left to review" in view.info.value
    for key in ("3", "s", "Backspace"):
        view.press(key)
    assert view.status_text == "nothing to undo"
    with Store(home_with_model.db_path) as store:
        assert store.counts()["labels"] == 0
    view.workbench.close()


def test_the_page_notebook_process_stays_free_of_tensorflow(home_with_model: Settings, pool: list[int]) -> None:
    code = (
        "import sys\nfrom mnist_hitl.app.page import AppPage\n"
        "page = AppPage(); page.preload(); page.tabs.selected_index = 1\n"
        "page.on_key({'key': 'Enter'})\n"
        "assert page.review.status_text.startswith('saved'), page.review.status_text\n"
        "print('tensorflow' in sys.modules)\n"
    )
    env = {**os.environ, "MNIST_HITL_HOME": str(home_with_model.home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
