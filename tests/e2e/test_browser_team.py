"""End to end in a real browser: two people review at once on one app server, each under their own name.

Needs Chromium at ``/usr/bin/chromium`` (or ``MNIST_HITL_CHROMIUM``) and the ``playwright`` package, like
tests/e2e/test_browser_review.py; the tests fail rather than skip when they are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_hitl.app.command import RunningApp, running_app
from mnist_hitl.config import Settings
from mnist_hitl.store import Store
from tests.e2e.test_browser_review import new_page, open_review, press, shown
from tests.support.helpers import import_digits

pytestmark = pytest.mark.browser

POOL = 24
ROUNDS = 3
NAMES = ("sasha", "bob 2")  # an s and a digit: typed into the name, they must not skip or label


@pytest.fixture
def team_app(home_with_model: Settings, tmp_path: Path) -> Iterator[RunningApp]:
    """The app with a pool of unlabelled drawings and a kernel waiting for each of the two people."""
    import_digits(home_with_model, POOL)
    with running_app(home_with_model, pool_size=2, log=tmp_path / "voila.log") as app:
        yield app


def named(name: str) -> str:
    return f".hitl-review-name-note [data-reviewer='{name}']"


def test_two_people_review_at_once_without_overlap_under_their_names(browser, team_app: RunningApp) -> None:
    errors: list[str] = []
    pages = {name: new_page(browser, errors, viewport={"width": 1100, "height": 1000}) for name in NAMES}
    for name, page in pages.items():
        open_review(page, team_app)
        page.click(".hitl-review-name input")
        page.keyboard.type(name)
        page.keyboard.press("Enter")  # the name is sent, and the keys are the tab's again
        page.wait_for_selector(named(name))
        page.wait_for_selector(f".hitl-review-status [data-reviewer='{name}']")  # the queue asked again, for them
    with Store(team_app.settings.db_path) as store:
        assert store.labels() == []  # what was typed into the name labelled nothing

    seen: dict[str, list[int]] = {name: [shown(page)["id"]] for name, page in pages.items()}
    for _ in range(ROUNDS):
        for name, page in pages.items():
            seen[name].append(press(page, "Enter", "confirm")["id"])
    first, second = (set(ids) for ids in seen.values())
    assert not first & second, seen  # no drawing was shown to both
    with Store(team_app.settings.db_path) as store:
        given = {(label.prediction_id, label.reviewer) for label in store.labels()}
    assert given == {(pid, name) for name, ids in seen.items() for pid in ids[:ROUNDS]}

    page = pages[NAMES[0]]
    page.click(".hitl-review-agreement-button")
    page.wait_for_selector(f".hitl-review-agreement tr[data-reviewer='{NAMES[1]}'][data-labels='{ROUNDS}']")

    page.reload()  # a new kernel: the browser gives it the name it kept
    page.wait_for_selector(".hitl-canvas.hitl-ready")
    page.click(".hitl-tabs .lm-TabBar-tab:has-text('Review')")
    page.wait_for_selector(f".hitl-review-status [data-reviewer='{NAMES[0]}']")
    assert page.input_value(".hitl-review-name input") == NAMES[0]
    again = shown(page)["id"]
    assert again not in seen[NAMES[1]]
    press(page, "Enter", "confirm")
    with Store(team_app.settings.db_path) as store:
        assert [label.reviewer for label in store.labels(again)] == [NAMES[0]]
    for page in pages.values():
        page.context.close()
    assert not errors, errors
