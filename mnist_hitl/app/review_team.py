"""The Review tab for a team: the reviewer's name, the queue's strategy, the team's agreement.

With a name typed in (the browser keeps it: :mod:`mnist_hitl.app.page`), the labels carry it and the
queue leases what it serves to that reviewer, so two people never get the same drawing; a label or a
skip gives the lease back, and so does a change of name or of strategy for the drawings waiting; an
undo or a change of an earlier decision takes the drawing's lease again (refused while another
reviewer holds it). Without a name the labels are ``unknown``'s and nothing is leased, as before
labels had reviewers. The strategy selector picks the queue
(:meth:`mnist_hitl.workbench.Workbench.queue`): a second opinion needs a name; in ``adjudicate``
the drawing's competing answers and who gave them are shown, and a digit decides the dispute; in
``suspect`` the label given and why it is suspect are shown, so a digit decides the drawing too
(a label of kind ``adjudicate``) instead of opening a dispute with the label it answers.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from mnist_hitl.app import views
from mnist_hitl.store import UNKNOWN_REVIEWER, StoreError
from mnist_hitl.store.rows import checked_reviewer

if TYPE_CHECKING:
    from mnist_hitl.workbench import QueueItem


class TeamReview:
    """The name, strategy and agreement part of :class:`~mnist_hitl.app.review.ReviewView` (its queue, its widgets
    and its status line are the view's)."""

    @property
    def signature(self) -> str:
        """The name the labels given here carry."""
        return self.reviewer or UNKNOWN_REVIEWER

    def set_reviewer(self, name: str) -> bool:
        """Label as ``name`` from now on (empty: no one, ``unknown``); False if the name is refused.

        The drawings waiting are given back and the queue is asked again, leased to the new name.
        """
        trimmed = name.strip()
        try:
            reviewer = checked_reviewer(trimmed) if trimmed else None
        except StoreError as error:
            self._show_name(f"not a name: {error}")
            return False
        if reviewer == self.reviewer:
            self._show_name()
            return True
        self._release([self.current, *self.buffer])
        self.reviewer = reviewer
        if reviewer is None and self.strategy == "second-opinion":
            self.strategy = self.strategy_picker.value = "margin"
        self._show_name(keep=True)
        self._start_over()
        who = "no one (unknown)" if reviewer is None else html.escape(reviewer)
        self._set_status(f"labelling as {who}", data={"reviewer": reviewer or ""})
        return True

    def set_strategy(self, strategy: str) -> bool:
        """Review the drawings ``strategy`` ranks (:meth:`Workbench.queue`); False if it needs a name not given."""
        if strategy == self.strategy:
            return True
        if strategy == "second-opinion" and self.reviewer is None:
            self.strategy_picker.value = self.strategy
            self._set_status("a second opinion needs your name: type it in first", error=True)
            return False
        self._release([self.current, *self.buffer])
        self.strategy = self.strategy_picker.value = strategy
        self._start_over()
        self._set_status(f"reviewing: {html.escape(strategy)}", data={"strategy": strategy})
        return True

    def show_agreement(self) -> None:
        """Show how far the reviewers agree: each one's labels and agreement with decided labels, kappa, alpha."""
        try:
            people, figures = self.workbench.reviewers(), self.workbench.agreement()
        except StoreError as error:
            self._set_status(f"the agreement cannot be read: {html.escape(str(error))}", error=True)
            return
        self.agreement.value = views.agreement_table(people, figures)

    def _start_over(self) -> None:
        if self.changing is not None:
            self.changing = None
            self._show_recent()
        self.reload()

    def _release(self, items: list[QueueItem | None]) -> None:
        """Give the reviewer's leases on these drawings back (others may be given them now)."""
        if self.reviewer is None:
            return
        for item in items:
            if item is not None:
                try:
                    self.workbench.release(item.prediction_id, self.reviewer)
                except StoreError:
                    pass  # the lease ends by itself

    def _take(self, item: QueueItem) -> bool:
        """Lease a drawing brought back (an undo, a change) to the reviewer, as the queue does; False if another
        reviewer holds it. Without a name nothing is leased.

        Raises:
            StoreError: the store failed.
        """
        return self.reviewer is None or self.workbench.lease(item.prediction_id, self.reviewer)

    def _next_waiting(self) -> QueueItem | None:
        """The next waiting drawing, its lease renewed for the time it is looked at; one whose lease ran out while it
        waited and that another reviewer holds now is theirs, and left out."""
        while self.buffer:
            item = self.buffer.popleft()
            try:
                if self._take(item):
                    return item
            except StoreError:
                return item  # the store failed: the drawing is shown, its lease ends by itself
        return None

    @staticmethod
    def _held(prediction_id: int) -> str:
        return f"#{prediction_id} is leased to another reviewer now"

    def _show_name(self, error: str | None = None, keep: bool = False) -> None:
        self.name_note.value = views.name_line(self.reviewer, error, keep)
        if error is None:
            self.name_note.remove_class("hitl-error")
        else:
            self.name_note.add_class("hitl-error")
