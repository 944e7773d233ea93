"""The app's page: the Draw and Review tabs, and the keys that drive the Review tab.

The keys come from ipyevents watching ``keydown`` on the tab container. While the pointer
is over the container, its listener sits on the whole document and the browser's own use
of those keys (Backspace, say) is held back; after a click on the Review tab the pointer
is there already. A hidden text box, the other way to get keys into a kernel, needs the
focus, which every click on a button takes away, and on a phone it opens the on-screen
keyboard over the drawing.

That listener takes every key, so the one text field, the reviewer's name, needs a few lines of
script (:data:`GLUE`): a key typed into it stops at the window, before the document's listener,
and Enter or Escape hands the keys back to the tab. The same script fills the field from the
browser's ``localStorage`` when the page opens; the kernel hears it as if it were typed, and says
which name to keep there once it has accepted one (:func:`mnist_hitl.app.views.name_line`).
"""

from __future__ import annotations

import ipywidgets as widgets
from ipyevents import Event

from mnist_hitl.app.draw import DrawingApp
from mnist_hitl.app.review import ReviewView
from mnist_hitl.app.views import REVIEWER_KEY, script
from mnist_hitl.config import Settings

DRAW, REVIEW = 0, 1
MODIFIERS = ("ctrlKey", "altKey", "metaKey")
NAME_FIELD = ".hitl-review-name"
GLUE = f"""(() => {{
  if (window.hitlNameGlue) return;
  window.hitlNameGlue = true;
  const inField = target => target instanceof Element && target.closest("{NAME_FIELD}") !== null;
  window.addEventListener("keydown", event => {{
    if (!inField(event.target)) return;
    event.stopPropagation();
    if (event.key === "Enter" || event.key === "Escape") setTimeout(() => event.target.blur(), 0);
  }}, true);
  const fill = () => {{
    const input = document.querySelector("{NAME_FIELD} input");
    if (!input || input.dataset.hitlFilled) return;
    input.dataset.hitlFilled = "1";
    const name = localStorage.getItem("{REVIEWER_KEY}");
    if (name && !input.value) {{
      input.value = name;
      input.dispatchEvent(new Event("change", {{bubbles: true}}));
    }}
  }};
  setInterval(fill, 200);
}})()"""


class AppPage:
    """Both tabs, sharing one workbench (one store connection, one model in memory).

    Args:
        settings: defaults to the environment's settings (``MNIST_HITL_HOME``).

    Attributes:
        draw: the Draw tab (:class:`mnist_hitl.app.draw.DrawingApp`).
        review: the Review tab (:class:`mnist_hitl.app.review.ReviewView`).
        tabs: the widget shown.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.draw = DrawingApp(settings)
        self.review = ReviewView(workbench=self.draw.workbench)
        self.tabs = widgets.Tab([self.draw.widget, self.review.widget], titles=("Draw", "Review"))
        self.tabs.add_class("hitl-tabs")
        self.glue = widgets.HTML(script(GLUE), layout=widgets.Layout(display="none"))
        self.tabs.observe(self._on_tab, names="selected_index")
        self.keys = Event(source=self.tabs, watched_events=["keydown"], ignore_modifier_key_events=True)
        self.keys.on_dom_event(self.on_key)
        self._last_stamp: float | None = None

    def preload(self) -> None:
        """Load the deployed model and the first drawings to review before the page connects."""
        self.draw.preload()
        self.review.reload()

    def display(self) -> None:
        """Show the page in the notebook (or the Voila page)."""
        from IPython.display import display

        display(widgets.VBox([self.glue, self.tabs]))

    def _ipython_display_(self) -> None:
        self.display()

    def _on_tab(self, change: dict) -> None:
        if change["new"] == REVIEW:
            self.review.activate()

    def on_key(self, event: dict) -> None:
        """A key pressed on the page: the Review tab's, while it is open; a held key does not repeat.

        In the served page ipyevents delivered each key press twice (Voila 0.5, ipyevents 2.0);
        the copy carries the same ``timeStamp`` and is dropped.
        """
        stamp = event.get("timeStamp")
        if stamp is not None and stamp == self._last_stamp:
            return
        self._last_stamp = stamp
        if self.tabs.selected_index != REVIEW or event.get("repeat") or any(event.get(m) for m in MODIFIERS):
            return
        self.review.press(str(event.get("key", "")))
