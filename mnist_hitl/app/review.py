"""The Review tab: the drawings the model is least sure of, one at a time, at keyboard speed.

A person looks at one drawing and presses its digit (``0``-``9``: the model's answer is a
confirmation, any other digit a correction), ``Enter`` to confirm, ``s`` to skip,
``Backspace`` to undo the last decision; clicking one of the last decisions shows that
drawing again and the next digit replaces the decision. Three choices keep it fast:

* A key press only swaps widget values. A few queue items wait in the kernel, scored
  already; the next one is sent to the page first, then the label is written, then the
  buffer is refilled if it runs low, so scoring the queue never sits between a key and
  the next drawing.
* The pictures go to the page as stored (a 28x28 PNG of a few hundred bytes) and the
  browser scales them: smoothly for the large view, pixelated for the small one.
* The history stays append-only: an undo appends an ``undo`` label (the drawing is
  unlabelled again and comes back), a change appends the new label; the latest counts.

A team shares the queue (the name, the strategy, the agreement table: :mod:`.review_team`).

The keys reach :meth:`ReviewView.press` from :mod:`mnist_hitl.app.page`.
"""

from __future__ import annotations

import html
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hitl.app import views
from mnist_hitl.app.review_team import TeamReview
from mnist_hitl.app.review_widgets import RECENT, ReviewWidgets
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.loop import trigger
from mnist_hitl.learning.loop.lock import start_cycle
from mnist_hitl.model import ModelFileError
from mnist_hitl.store import ADJUDICATE, StoreError
from mnist_hitl.workbench import Workbench

if TYPE_CHECKING:
    from mnist_hitl.workbench import QueueItem

PREFETCH = 4  # refill the buffer when fewer drawings than this wait in it
BATCH = 12  # drawings asked of the queue per refill
LEASED_BATCH = 6  # the same for a named reviewer: fewer, as each one is kept from the others while it waits
STALE_SECONDS = 30.0  # a buffer filled longer ago than this is filled again when the tab opens
DECIDING = ("adjudicate", "suspect")  # strategies that show the label given: an answer there decides the drawing


@dataclass(frozen=True)
class Decision:
    """What the person said about one drawing: a label (``confirm``/``correct``/``adjudicate``) or a skip (label
    None)."""

    item: QueueItem
    label: int | None
    kind: str

    @property
    def prediction_id(self) -> int:
        return self.item.prediction_id

    def describe(self) -> str:
        if self.label is None:
            return f"#{self.prediction_id}: skipped"
        return f"#{self.prediction_id}: {self.label} ({self.kind})"


class ReviewView(TeamReview, ReviewWidgets):
    """What the Review tab's keys and buttons do (its widgets: :class:`~mnist_hitl.app.review_widgets.ReviewWidgets`).

    Args:
        settings: defaults to the workbench's, or the environment's.
        workbench: the queue and label operations (the Draw tab's, to share its model).
        train_command: what **Train now** starts (default ``mnist-hitl cycle --force-retrain``).

    Attributes:
        current: the drawing shown, or None when nothing is left.
        reviewer: the name labels are given under (and drawings leased to), or None: ``unknown``, no leases.
        strategy: the queue's strategy (:data:`mnist_hitl.workbench.STRATEGIES`).
        changing: the earlier decision being changed (its drawing is shown), or None.
        decisions: this session's standing decisions, oldest first.
        status_text: the status line as plain text.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        workbench: Workbench | None = None,
        train_command: list[str] | None = None,
    ) -> None:
        self.settings = settings or (workbench.settings if workbench else get_settings())
        self.workbench = workbench or Workbench(self.settings, source="app")
        self.train_command = train_command or [
            str(Path(sys.executable).parent / "mnist-hitl"),
            "cycle",
            "--force-retrain",
        ]
        self.current: QueueItem | None = None
        self.changing: Decision | None = None
        self.buffer: deque[QueueItem] = deque()
        self.decisions: list[Decision] = []
        self.skipped: set[int] = set()
        self.reviewer: str | None = None
        self.strategy = "margin"
        self.served_by: dict[int, str] = {}  # the strategy that served each drawing
        self.version: str | None = None
        self.accuracy: float | None = None
        self.cycle: subprocess.Popen | None = None
        self._filled_at = float("-inf")
        self._build()
        self._show(None)
        self._show_name()
        self._set_status("")

    # what a person does ----------------------------------------------------------------

    def press(self, key: str) -> None:
        """Act on a key as the browser names it (``KeyboardEvent.key``): 0-9, Enter, Backspace, s."""
        if len(key) == 1 and key.isdigit():
            self.label(int(key))
        elif key == "Enter":
            self.confirm()
        elif key == "Backspace":
            self.undo()
        elif key in ("s", "S"):
            self.skip()

    def label(self, digit: int) -> int | None:
        """Label the drawing shown as ``digit`` and show the next one; returns the label's id.

        The model's answer makes a ``confirm``, any other digit a ``correct``; a drawing served to adjudicate, or
        as a suspect (its label shown, and why it is suspect), gets an ``adjudicate``: the answer decides it.
        """
        item = self.current
        if item is None:
            self._set_status("nothing to label: the queue is empty", error=True)
            return None
        if self.served_by.get(item.prediction_id) in DECIDING:
            kind = ADJUDICATE
        else:
            kind = "confirm" if digit == item.predicted_label else "correct"
        replaced, decision = self.changing, Decision(item, int(digit), kind)
        if replaced is not None:
            self.decisions.remove(replaced)
            self.skipped.discard(item.prediction_id)
            self.changing = None
        self.decisions.append(decision)
        self._show_next()  # on its way to the page before anything is written
        try:
            label_id = self.workbench.label(item.prediction_id, digit, kind, reviewer=self.signature)
        except StoreError as error:
            self.decisions.remove(decision)
            if replaced is not None:  # it still stands
                self.decisions.append(replaced)
            self._show_again(item)
            self._set_status(f"not saved: {html.escape(str(error))}", error=True)
            return None
        was = f" (was {html.escape(replaced.describe().split(': ', 1)[1])})" if replaced else ""
        self._after_decision()
        self._set_status(
            f"saved: #{item.prediction_id} is a {digit}, {'an' if kind == ADJUDICATE else 'a'} {kind}{was}",
            data={"prediction-id": item.prediction_id, "label": digit, "kind": kind},
        )
        return label_id

    def confirm(self) -> int | None:
        """The model's answer is right: label the drawing shown with it."""
        if self.current is None:
            self._set_status("nothing to confirm: the queue is empty", error=True)
            return None
        return self.label(self.current.predicted_label)

    def skip(self) -> None:
        """Leave the drawing shown unlabelled for this session; while changing, keep the earlier decision."""
        item = self.current
        if item is None:
            self._set_status("nothing to skip: the queue is empty", error=True)
            return
        if self.changing is not None:
            self._cancel_change()
            return
        self.decisions.append(Decision(item, None, "skip"))
        self.skipped.add(item.prediction_id)
        self._show_next()
        self._release([item])
        self._after_decision()
        self._set_status(f"skipped #{item.prediction_id}", data={"prediction-id": item.prediction_id, "kind": "skip"})

    def undo(self) -> None:
        """Undo the last decision and show its drawing again, leased to the reviewer again (a label is undone by an
        ``undo`` label); refused while another reviewer holds the drawing."""
        if self.changing is not None:
            self._cancel_change()
            return
        if not self.decisions:
            self._set_status("nothing to undo", error=True)
            return
        decision = self.decisions.pop()
        pid = decision.prediction_id
        self._show_again(decision.item)
        try:
            problem = None if self._take(decision.item) else self._held(pid)
            if problem is None and decision.label is not None:
                self.workbench.undo(pid, reviewer=self.signature)
                self._take(decision.item)  # the undo ended the lease; a reviewer who took it since keeps it
        except StoreError as error:
            problem = html.escape(str(error))
            self._release([decision.item])
        if problem is not None:
            self.decisions.append(decision)
            self._show_next()
            self._set_status(f"not undone: {problem}", error=True)
            return
        self.skipped.discard(pid)
        self._after_decision()
        self._set_status(
            f"undid {html.escape(decision.describe())}: decide again", data={"prediction-id": pid, "kind": "undo"}
        )

    def change(self, index: int) -> None:
        """Show the drawing of the ``index``-th most recent decision (0: the last); the next digit replaces it."""
        recent = self.decisions[::-1][:RECENT]
        if not 0 <= index < len(recent):
            return
        decision = recent[index]
        try:
            taken = self._take(decision.item)
        except StoreError as error:
            self._set_status(f"cannot change it: {html.escape(str(error))}", error=True)
            return
        if not taken:
            self._set_status(f"cannot change it: {self._held(decision.prediction_id)}", error=True)
            return
        if self.changing is None and self.current is not None:
            self.buffer.appendleft(self.current)
        elif self.changing is not None and self.changing is not decision:
            self._release([self.changing.item])  # that change is given up
        self.changing = decision
        self._show(decision.item)
        self._set_status(
            f"changing {html.escape(decision.describe())}: press the right digit, or s to keep it",
            data={"prediction-id": decision.prediction_id, "kind": "change"},
        )
        self._show_recent()

    def _cancel_change(self) -> None:
        decision, self.changing = self.changing, None
        self._release([decision.item])
        self._show_next()
        self._set_status(f"kept {html.escape(decision.describe())}")
        self._show_recent()

    def train_now(self) -> bool:
        """Start a learning cycle in the background, unless one is running; True if one was started."""
        log = self.settings.home / "train-now.log"
        if self.cycle is None or self.cycle.poll() is not None:  # one started here takes a moment to lock

            def start(_: str) -> None:
                self.cycle = start_cycle(self.settings, self.train_command, log)

            asked = trigger.request(self.settings, start, "Train now", wait_for_pending=False)
            if asked and self.cycle is not None:
                self._set_status(
                    f"a learning cycle was started (its output: {html.escape(str(log))}); a better"
                    " model is used here as soon as it is deployed",
                    data={"cycle": "started"},
                )
                return True
        self._set_status(
            "no new cycle: one is already running; the app shows the new model when it is deployed",
            data={"cycle": "running"},
        )
        return False

    # the queue -----------------------------------------------------------------------

    def reload(self) -> None:
        """Fill the buffer from the queue afresh and show its first drawing."""
        self.buffer.clear()
        self.current = None
        self._check_model()
        self._refill()
        self._show_next()
        self._show_progress()

    def activate(self) -> None:
        """The tab was opened: refresh a buffer left waiting, and what the page says."""
        if not self.decisions and self.changing is None and time.monotonic() - self._filled_at > STALE_SECONDS:
            self._release([self.current, *self.buffer])  # what the queue serves now may be others
            self.reload()
            return
        self._check_model()
        self._show_progress()

    def _refill(self) -> None:
        exclude = (
            self.skipped
            | {item.prediction_id for item in self.buffer}
            | {decision.prediction_id for decision in self.decisions}
        )
        if self.current is not None:
            exclude.add(self.current.prediction_id)
        try:
            with views.native_stderr_silenced():
                items = self.workbench.queue(
                    limit=BATCH if self.reviewer is None else LEASED_BATCH,
                    strategy=self.strategy,
                    exclude=exclude,
                    reviewer=self.reviewer,
                )
        except (ModelFileError, StoreError, ValueError) as error:
            self._set_status(f"the queue cannot be read: {html.escape(str(error))}", error=True)
            return
        self.served_by.update((item.prediction_id, self.strategy) for item in items)
        self.buffer.extend(items)
        self._filled_at = time.monotonic()

    def _after_decision(self) -> None:
        """What follows a decision once the next drawing is on its way: refill, the model, the lists.

        The status line is set after it, so a page that sees the status sees the rest too.
        """
        if len(self.buffer) < PREFETCH:
            self._refill()
            if self.current is None and self.changing is None:
                self._show_next()
        self._check_model()
        self._show_recent()
        self._show_progress()

    def _check_model(self) -> None:
        """Notice a newly deployed model: say so, and score the waiting drawings again with it."""
        try:
            with views.native_stderr_silenced():
                self.workbench.refresh_model()
        except ModelFileError:
            pass
        version = self.workbench.serving_version
        if version != self.version:
            previous, self.version = self.version, version
            if previous is not None:
                self.buffer.clear()  # scored by the previous model
                self._refill()
            self._show_model(previous)
        try:
            self.accuracy = self.workbench.labelled_accuracy()
        except (ModelFileError, StoreError):
            self.accuracy = None

    # what the page shows ------------------------------------------------------------

    def _show_next(self) -> None:
        self._show(self._next_waiting())

    def _show_again(self, item: QueueItem) -> None:
        if self.current is not None:
            self.buffer.appendleft(self.current)
        self._show(item)

    def _show(self, item: QueueItem | None) -> None:
        """Show a drawing; the line naming it is set last, so a page that sees it has the picture too."""
        self.current = item
        self.picture.value = self.small.value = b"" if item is None else item.png
        self.guesses.value = "" if item is None else views.top_guesses(item.probabilities)
        if self.changing is not None and self.changing.item is item:  # with every label it has had
            history = self.workbench.history(item.prediction_id)
            self.info.value = views.item_line(item, self.changing.describe(), history)
        else:
            self.info.value = views.item_line(item)

    def _show_recent(self) -> None:
        recent = self.decisions[::-1][:RECENT]
        for index, b in enumerate(self.recent_buttons):
            if index < len(recent):
                b.description = recent[index].describe()
                b.button_style = "info" if recent[index] is self.changing else ""
                b.remove_class("hitl-empty")
            else:
                b.description = ""
                b.add_class("hitl-empty")

    def _show_progress(self) -> None:
        labelled = len({d.prediction_id for d in self.decisions if d.label is not None})
        try:
            counts = self.workbench.counts()
            left = counts["predictions"] - counts["labelled_predictions"]
        except StoreError:
            left = None
        self.progress.value = views.progress_line(labelled, left, self.accuracy)

    def _show_model(self, previous: str | None = None) -> None:
        self.model.value = views.model_line(self.version, previous)
