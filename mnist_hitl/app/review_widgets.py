"""The Review tab's widgets, made and laid out; what they do is :class:`mnist_hitl.app.review.ReviewView`'s.

Widgets that look alike share one Layout and one style: every widget is a model the page
must fetch and build before it shows, so fewer load faster. Each carries a stable CSS class
(``hitl-review-...``), which the page's style sheet and the browser tests find it by.
"""

from __future__ import annotations

import html

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from mnist_hitl.app import views

RECENT = 10  # decisions listed, each can be changed
STRATEGY_CHOICES = (  # what the selector shows, and the queue's strategy it asks for
    ("the model's least sure", "margin"),
    ("the model's least sure (entropy)", "entropy"),
    ("labels the model doubts", "doubtful"),
    ("suspect labels", "suspect"),
    ("second opinion (needs your name)", "second-opinion"),
    ("adjudicate disputes", "adjudicate"),
)
PICTURE_SIZE, SMALL_SIZE = 280, 84


class ReviewWidgets:
    """The Review tab's widgets and its status line.

    The subclass says what the buttons and fields do: ``label(digit)``, ``confirm()``, ``undo()``, ``skip()``,
    ``train_now()``, ``change(index)``, ``set_reviewer(name)``, ``set_strategy(strategy)`` and
    ``show_agreement()``.

    Attributes:
        widget: the tab.
        status_text: the status line as plain text.
    """

    def _build(self) -> None:
        """Make every widget; the tab is :attr:`widget`."""
        square, tall = widgets.Layout(width="48px", height="48px"), widgets.Layout(width="auto", height="48px")
        plain, wide = widgets.Layout(), widgets.Layout(width="auto", min_height="36px")
        button_style, html_style = widgets.ButtonStyle(), HTMLStyle()

        def button(description: str, css: str, handler, layout=tall, kind: str = "", tooltip: str = ""):
            b = widgets.Button(
                description=description, button_style=kind, tooltip=tooltip, layout=layout, style=button_style
            )
            b.on_click(lambda _: handler())
            return b.add_class(css)

        def html_widget(css: str, value: str = "") -> widgets.HTML:
            h = widgets.HTML(value, layout=plain, style=html_style)
            return h.add_class(css) if css else h

        self.picture = widgets.Image(format="png", width=PICTURE_SIZE, height=PICTURE_SIZE)
        self.small = widgets.Image(format="png", width=SMALL_SIZE, height=SMALL_SIZE)
        self.picture.add_class("hitl-review-picture")
        self.small.add_class("hitl-review-small")
        self.guesses, self.info = html_widget("hitl-review-guesses"), html_widget("hitl-review-info")
        self.digit_buttons = [
            button(str(d), f"hitl-review-digit-{d}", lambda d=d: self.label(d), square).add_class("hitl-review-digit")
            for d in range(10)
        ]
        self.confirm_button = button(
            "Confirm \u23ce",
            "hitl-review-confirm",
            self.confirm,
            kind="success",
            tooltip="the model's answer is right (Enter)",
        )
        self.undo_button = button("Undo \u232b", "hitl-review-undo", self.undo, tooltip="undo the last decision")
        self.skip_button = button("Skip (s)", "hitl-review-skip", self.skip, tooltip="decide later")
        self.train_button = button(
            "Train now",
            "hitl-review-train",
            self.train_now,
            kind="warning",
            tooltip="start a learning cycle with the labels given so far",
        )
        self.recent_buttons = [
            button("", f"hitl-review-recent-{i}", lambda i=i: self.change(i), wide).add_class("hitl-empty")
            for i in range(RECENT)
        ]
        self.progress, self.model = html_widget("hitl-review-progress"), html_widget("hitl-review-model")
        self.status = html_widget("hitl-review-status")
        self._build_team(button, html_widget)

        self.widget = self._layout(html_widget, plain)

    def _build_team(self, button, html_widget) -> None:
        """The name field and its line, the strategy selector, the agreement button and table."""
        self.name = widgets.Text(
            placeholder="Your name", continuous_update=False, layout=widgets.Layout(width="160px")
        ).add_class("hitl-review-name")
        self.name.observe(lambda change: self.set_reviewer(change["new"]), names="value")
        self.name_note = html_widget("hitl-review-name-note")
        self.strategy_picker = widgets.Dropdown(
            options=STRATEGY_CHOICES, value="margin", layout=widgets.Layout(width="auto")
        ).add_class("hitl-review-strategy")
        self.strategy_picker.observe(lambda change: self.set_strategy(change["new"]), names="value")
        self.agreement_button = button(
            "Agreement", "hitl-review-agreement-button", self.show_agreement, tooltip="how far the reviewers agree"
        )
        self.agreement = html_widget("hitl-review-agreement")

    def _layout(self, html_widget, plain) -> widgets.VBox:
        """The tab's widgets arranged: the picture and its guesses, the keys, progress, the last decisions."""
        side = widgets.VBox(
            [self.guesses, self.info, html_widget("", "<small>its 28x28</small>"), self.small],
            layout=widgets.Layout(margin="0 0 0 16px"),
        ).add_class("hitl-answer")
        keys = widgets.HBox(
            [*self.digit_buttons, self.confirm_button, self.undo_button, self.skip_button],
            layout=widgets.Layout(flex_flow="row wrap"),
        )
        who = widgets.HBox(
            [self.name, self.strategy_picker, self.name_note],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"),
        )
        return widgets.VBox(
            [
                who,
                html_widget("", views.KEYS_HINT),
                widgets.HBox([self.picture, side], layout=plain).add_class("hitl-row"),
                keys,
                self.progress,
                widgets.HBox([self.model, self.train_button], layout=widgets.Layout(align_items="center")),
                self.status,
                html_widget("", "<b>last decisions</b> <small>(click one to change it)</small>"),
                widgets.VBox(self.recent_buttons, layout=widgets.Layout(align_items="flex-start")).add_class(
                    "hitl-review-recent"
                ),
                widgets.HBox([self.agreement_button], layout=plain),
                self.agreement,
            ],
            layout=plain,
        ).add_class("hitl-review")

    def _set_status(self, message: str, error: bool = False, data: dict | None = None) -> None:
        """Show a message (already HTML-safe) in the status line, with values as data attributes."""
        self.status.value = views.status_line(message, data)
        if error:
            self.status.add_class("hitl-error")
        else:
            self.status.remove_class("hitl-error")
        self.status_text = html.unescape(message)
