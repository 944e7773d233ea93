"""The Review tab for a team, driven in-process: the reviewer's name, leases, the strategies, the agreement table."""

from __future__ import annotations

import re
import time

import pytest

from mnist_hitl.app.page import AppPage
from mnist_hitl.app.review import ReviewView
from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain.labels import retraining_labels
from mnist_hitl.store import Store
from mnist_hitl.workbench import Workbench
from mnist_hitl.workbench.adjudication import disputes
from mnist_hitl.workbench.suspects import Suspect, record_suspects
from tests.support.helpers import import_digits

POOL = 24


def data(widget, name: str) -> str:
    match = re.search(rf'data-{name}="([^"]*)"', widget.value)
    return match.group(1) if match else ""


def signed(settings: Settings, prediction_id: int) -> list[tuple[int | None, str, str]]:
    with Store(settings.db_path) as store:
        return [(label.label, label.kind, label.reviewer) for label in store.labels(prediction_id)]


@pytest.fixture
def pool(home_with_model: Settings) -> list[int]:
    return import_digits(home_with_model, POOL)


@pytest.fixture
def views(home_with_model: Settings, pool: list[int]):
    opened = []

    def open_view(name: str = "") -> ReviewView:
        view = ReviewView(home_with_model)
        opened.append(view)
        view.reload()
        if name:
            view.name.value = name  # as the page sends it
        return view

    yield open_view
    for view in opened:
        view.workbench.close()


def waiting(view: ReviewView) -> set[int]:
    return {item.prediction_id for item in [view.current, *view.buffer] if item is not None}


def test_a_name_is_checked_as_the_store_checks_it_and_kept_in_the_browser(views, home_with_model: Settings) -> None:
    view = views()
    assert data(view.name_note, "reviewer") == "" and "localStorage" not in view.name_note.value  # a name to fill in
    for refused in ("x" * 101, "bob\x07"):
        view.name.value = refused
        assert view.reviewer is None and "hitl-error" in view.name_note._dom_classes
        assert data(view.name_note, "reviewer-error") == "1" and "localStorage" not in view.name_note.value
    view.name.value = "  ada "
    assert view.reviewer == "ada" and "hitl-error" not in view.name_note._dom_classes
    assert data(view.name_note, "reviewer") == "ada"
    assert "localStorage.setItem(&quot;mnist-hitl-reviewer&quot;, &quot;ada&quot;)" in view.name_note.value

    first = view.current
    view.press("Enter")
    view.press("Backspace")
    view.press("Enter")
    assert signed(home_with_model, first.prediction_id) == [
        (first.predicted_label, "confirm", "ada"),
        (None, "undo", "ada"),
        (first.predicted_label, "confirm", "ada"),
    ]
    view.change(0)  # the labels so far name who gave them
    assert f"labels so far: {first.predicted_label} (confirm) by ada" in view.info.value
    view.name.value = ""  # no name now: the browser forgets it
    assert view.reviewer is None and "localStorage.removeItem(&quot;mnist-hitl-reviewer&quot;)" in view.name_note.value


def test_without_a_name_labels_are_unknowns_and_nothing_is_held(views, home_with_model: Settings) -> None:
    view = views()
    first = view.current
    view.press("Enter")
    assert signed(home_with_model, first.prediction_id) == [(first.predicted_label, "confirm", "unknown")]
    with Store(home_with_model.db_path) as store:
        assert store.leased_to_others("someone") == set()


def test_two_named_reviewers_never_wait_on_the_same_drawing_and_a_skip_gives_it_back(
    views, home_with_model: Settings
) -> None:
    ada, bob = views("ada"), views("bob")
    assert waiting(ada) and waiting(bob) and not waiting(ada) & waiting(bob)
    shown = {"ada": [], "bob": []}
    for _ in range(3):
        for name, view in (("ada", ada), ("bob", bob)):
            shown[name].append(view.current.prediction_id)
            view.press("Enter")
            assert not waiting(ada) & waiting(bob)
    assert not set(shown["ada"]) & set(shown["bob"])
    for name, ids in shown.items():
        assert all(signed(home_with_model, pid)[-1][2] == name for pid in ids)

    skipped = bob.current.prediction_id
    with Store(home_with_model.db_path) as store:
        assert skipped in store.leased_to_others("ada")
        bob.press("s")
        assert skipped not in store.leased_to_others("ada")  # free for others now
        held_by_bob = store.leased_to_others("ada")
        bob.name.value = ""  # no name any more: the drawings waiting for bob are given back
        assert bob.reviewer is None and store.leased_to_others("ada") < held_by_bob


def test_the_strategies_second_opinion_needs_a_name_and_adjudicate_decides(views, home_with_model: Settings) -> None:
    anonymous = views()
    anonymous.strategy_picker.value = "second-opinion"
    assert anonymous.strategy == "margin" and anonymous.strategy_picker.value == "margin"
    assert anonymous.status_text == "a second opinion needs your name: type it in first"

    items = anonymous.workbench.queue(limit=POOL)
    sure = max(items, key=lambda item: max(item.probabilities))
    doubted = sure.prediction_id
    disputed = next(item.prediction_id for item in items if item.prediction_id != doubted)
    with Store(home_with_model.db_path) as store:
        store.add_label(disputed, 3, "correct", "ada")
        store.add_label(disputed, 5, "correct", "bob")
        store.add_label(doubted, (sure.predicted_label + 1) % 10, "correct", "bob")  # a label the model doubts

    cy = views("cy")
    cy.strategy_picker.value = "second-opinion"
    assert cy.strategy == "second-opinion" and cy.current.prediction_id == doubted
    assert "the model doubts the label given" in cy.info.value and "by bob" not in cy.info.value  # answered blind

    cy.strategy_picker.value = "adjudicate"
    assert cy.current.prediction_id == disputed
    assert "3 by ada" in cy.info.value and "5 by bob" in cy.info.value  # the competing answers, and whose
    cy.press("5")
    assert signed(home_with_model, disputed)[-1] == (5, "adjudicate", "cy")
    assert cy.status_text == f"saved: #{disputed} is a 5, an adjudicate"
    assert cy.recent_buttons[0].description == f"#{disputed}: 5 (adjudicate)"

    cy.strategy_picker.value = "second-opinion"
    cy.name.value = ""  # a second opinion is no one's without a name: back to the model's least sure
    assert cy.strategy == "margin" and cy.strategy_picker.value == "margin" and cy.current is not None


def test_an_answer_to_a_suspect_label_decides_the_drawing_instead_of_opening_a_dispute(
    views, home_with_model: Settings, pool: list[int]
) -> None:
    flagged = pool[0]
    believed = [0.91 if digit == 9 else 0.01 for digit in range(10)]
    with Store(home_with_model.db_path) as store:
        label_id = store.add_label(flagged, 4, "correct", "ada")
        record_suspects(store, [Suspect(flagged, label_id, 4, "ada", 9, 0.91, 0.01, believed)], "cycle-1", "oof")
    bob = views("bob")
    bob.strategy_picker.value = "suspect"
    assert bob.current.prediction_id == flagged and "labelled 4 by ada" in bob.info.value  # an informed answer
    bob.press("9")
    assert signed(home_with_model, flagged)[-1] == (9, "adjudicate", "bob")
    with Store(home_with_model.db_path) as store:
        assert disputes(store.labels()) == {}
        labels, held = retraining_labels(store)
    assert len(held) == 0 and labels.y[labels.prediction_ids.tolist().index(flagged)] == 9  # trained on bob's 9


def test_an_undo_or_a_change_takes_the_drawings_lease_again(views, home_with_model: Settings) -> None:
    ada = views("ada")
    drawing = ada.current.prediction_id
    with Store(home_with_model.db_path) as store:

        def adas() -> bool:
            return drawing in store.leased_to_others("bob")

        ada.press("s")
        assert not adas() and store.lease([drawing], "bob", 60) == [drawing]  # bob is given it meanwhile
        ada.press("Backspace")
        assert ada.status_text == f"not undone: #{drawing} is leased to another reviewer now"
        assert ada.current.prediction_id != drawing and ada.decisions[-1].label is None  # the skip stands
        store.release(drawing, "bob")
        ada.press("Backspace")
        assert ada.current.prediction_id == drawing and adas()  # back, and hers again
        ada.press("Enter")
        assert not adas()  # her label ended her lease
        ada.press("Backspace")
        assert ada.current.prediction_id == drawing and adas()  # undone: hers while she decides again
        ada.press("Enter")
        ada.change(0)
        assert ada.current.prediction_id == drawing and adas()
        ada.press("s")  # the decision kept: the lease given back
        assert not adas() and ada.current.prediction_id != drawing


def test_the_agreement_table_shows_each_reviewer_and_pair(views, home_with_model: Settings, pool: list[int]) -> None:
    with Store(home_with_model.db_path) as store:
        for index, pid in enumerate(pool[:6]):
            store.add_label(pid, index % 10, "correct", "ada")
            store.add_label(pid, index % 10 if index < 4 else 9, "correct", "bob")
    view = views()
    assert view.agreement.value == ""  # computed on demand only
    view.agreement_button.click()
    figures, table = view.workbench.agreement(), view.agreement.value
    people = dict(re.findall(r'data-reviewer="([^"]+)" data-labels="(\d+)"', table))
    assert people == {"ada": "6", "bob": "6"}
    assert re.findall(r'data-pair="ada &amp; bob" data-kappa="([^"]*)"', table) == [str(figures["kappa"][0]["kappa"])]
    assert data(view.agreement, "alpha") == str(figures["alpha"]) and data(view.agreement, "shared") == "6"
    assert "<td>67%</td>" in table  # the pair gave the same digit to 4 of their 6 drawings


def test_the_page_carries_the_script_that_keeps_the_name(home_with_model: Settings) -> None:
    page = AppPage(home_with_model)
    try:
        assert "onerror=" in page.glue.value and "localStorage.getItem(&quot;mnist-hitl-reviewer&quot;)" in (
            page.glue.value
        )
        assert "hitl-review-name" in page.review.name._dom_classes
    finally:
        page.draw.workbench.close()


def test_a_drawing_shown_has_its_lease_renewed_and_one_taken_meanwhile_by_another_reviewer_is_left_out(
    home_with_model: Settings, pool: list[int]
) -> None:
    settings = home_with_model.replace(lease_seconds=3.0)
    ada = ReviewView(settings)
    try:
        ada.reload()
        ada.name.value = "ada"
        time.sleep(3.5)  # every lease of the drawings waiting for ada has run out
        with Store(settings.db_path) as store:
            assert not store.leased_to_others("bob")
            ada.press("s")  # the next drawing is shown: leased to ada again
            shown = ada.current.prediction_id
            assert shown in store.leased_to_others("bob")

            time.sleep(3.5)
            with Workbench(settings) as bench:  # bob takes every free drawing, ada's waiting ones included
                taken = {item.prediction_id for item in bench.queue(limit=POOL, reviewer="bob")}
            assert taken & {item.prediction_id for item in ada.buffer}
            for _ in range(3):
                ada.press("s")
                assert ada.current is None or ada.current.prediction_id not in taken  # never bob's
    finally:
        ada.workbench.close()
