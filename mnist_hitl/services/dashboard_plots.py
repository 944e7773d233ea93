"""The dashboard's panels drawn with matplotlib, as Grafana would show them: stat panels as a number,
bar gauges as bars of each series' last value, time series as lines, in each panel's unit.

The figures are built without pyplot, so a notebook shows each once, where it displays it.
"""

from __future__ import annotations

import math
import textwrap
from datetime import UTC, datetime

import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from mnist_hitl.services.dashboards import PanelData, Window

STAT_COLUMNS = 4
MAX_LEGEND_ENTRIES = 12
ERROR_COLOUR = "#b03030"
NO_DATA_COLOUR = "#777777"


def format_value(value: float, unit: str = "") -> str:
    """A value in a Grafana unit (``percentunit``, ``s``, ``reqps``, ``dateTimeAsIso``, ``short``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        for size, suffix in ((86400, " d"), (3600, " h"), (60, " min"), (1, " s")):
            if abs(value) >= size:
                return f"{value / size:.3g}{suffix}"
        return f"{value * 1000:.3g} ms"
    if unit == "dateTimeAsIso":
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return f"{text}/s" if unit == "reqps" else text


def last_values(data: PanelData) -> pd.Series:
    """Each series' last value that is not missing (Grafana's ``lastNotNull``)."""
    return data.frame.apply(lambda column: column.dropna().iloc[-1] if column.notna().any() else math.nan)


def stat_text(data: PanelData) -> str:
    """What a stat panel shows: the message, the series' names, or their last values."""
    if data.errors:
        return "\n".join(data.errors)
    if not data.has_data:
        return "No data"
    values = last_values(data).dropna()
    if data.panel.shows_name:
        return "\n".join(values.index)
    if len(values) == 1:
        return format_value(values.iloc[0], data.panel.unit)
    return "\n".join(f"{name}: {format_value(value, data.panel.unit)}" for name, value in values.items())


def wrapped(text: str, width: int) -> str:
    """Long lines folded: matplotlib's own wrapping ignores the axes' width."""
    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def _message(axes, text: str, colour: str) -> None:
    axes.text(
        0.5, 0.5, wrapped(text, 110), ha="center", va="center", fontsize=9, color=colour, transform=axes.transAxes
    )
    axes.set_xticks([])
    axes.set_yticks([])


def draw_stats(results: list[PanelData]) -> Figure | None:
    """Every stat panel in one figure, a number (or a message) each."""
    stats = [data for data in results if data.panel.kind == "stat"]
    if not stats:
        return None
    rows = math.ceil(len(stats) / STAT_COLUMNS)
    figure = Figure(figsize=(3.2 * STAT_COLUMNS, 1.9 * rows), layout="constrained")
    for index, data in enumerate(stats):
        axes = figure.add_subplot(rows, STAT_COLUMNS, index + 1)
        axes.set_title(data.panel.title, fontsize=10)
        text = stat_text(data)
        ok = data.has_data and not data.errors
        size = 20 if ok and "\n" not in text and len(text) < 14 else 10
        axes.text(0.5, 0.45, wrapped(text, 34), ha="center", va="center", fontsize=size, transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
        if not ok:
            axes.texts[-1].set_color(ERROR_COLOUR if data.errors else NO_DATA_COLOUR)
    return figure


def draw_panel(data: PanelData, window: Window | None = None) -> Figure:
    """A time series (over ``window``, if given) or a bar gauge; a message instead when there is nothing to draw.

    A panel with data from some queries and errors from others is drawn, the errors written under its title.
    """
    panel = data.panel
    figure = Figure(figsize=(9, 2.6), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(panel.title, fontsize=11, loc="left")
    if not data.has_data:
        _message(axes, "\n".join(data.errors) or "No data", ERROR_COLOUR if data.errors else NO_DATA_COLOUR)
        return figure
    if data.errors:
        axes.set_title(wrapped("\n".join(data.errors), 90), fontsize=8, loc="right", color=ERROR_COLOUR)
    unit_axis = FuncFormatter(lambda value, _: format_value(value, panel.unit))
    if panel.kind == "bargauge":
        values = last_values(data).dropna()
        axes.barh(list(values.index), list(values.values))
        axes.xaxis.set_major_formatter(unit_axis)
        axes.set_xlim(left=min(0, values.min()), right=max(values.max() * 1.15, 1))
        for y, value in enumerate(values.values):
            axes.annotate(format_value(value, panel.unit), (value, y), xytext=(3, 0), textcoords="offset points")
        return figure
    frame = data.frame.replace([math.inf, -math.inf], math.nan)
    for name in frame.columns:
        axes.plot(frame.index, frame[name], label=name)
    axes.yaxis.set_major_formatter(unit_axis)
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(
        ConciseDateFormatter(locator, offset_formats=["", "%Y", "%Y-%m", *["%Y-%m-%d UTC"] * 3])
    )
    axes.grid(alpha=0.3)
    if window:
        axes.set_xlim(pd.to_datetime(window.start, unit="s", utc=True), pd.to_datetime(window.end, unit="s", utc=True))
    if 1 < len(frame.columns) <= MAX_LEGEND_ENTRIES or (len(frame.columns) == 1 and frame.columns[0]):
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return figure


def draw_dashboard(results: list[PanelData], window: Window | None = None) -> list[Figure]:
    """The stat panels together, then every other panel on its own, in the dashboard's order."""
    stats = draw_stats(results)
    return ([stats] if stats else []) + [draw_panel(data, window) for data in results if data.panel.kind != "stat"]
