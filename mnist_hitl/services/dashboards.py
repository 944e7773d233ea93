"""The provisioned Grafana dashboards, read without Grafana: their panels, their queries, their data.

Grafana has no Debian package and Debian's Prometheus has no web UI, so on a laptop nobody would see
the panels of ``dashboards/grafana/dashboards/``. This module reads a dashboard's JSON as Grafana does
(each panel's title, type, unit and PromQL targets), fills in the variables Grafana would
(``$__rate_interval``, ``$__interval``, ``$__range`` and the dashboard's own template variables) and asks
Prometheus' HTTP API for each query over a time window. ``metrics.ipynb`` draws the answers
(:mod:`.dashboard_plots`). A query that fails (Prometheus down, a bad expression) becomes the panel's
message, never an exception: one broken panel does not hide the others.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

from mnist_hitl.config import Settings
from mnist_hitl.resources import resource

DASHBOARD = "dashboards/grafana/dashboards/mnist-hitl.json"
DEFAULT_SCRAPE_SECONDS = 15  # Grafana's default for a Prometheus datasource, and Prometheus' own
MAX_POINTS = 240  # about one point per pixel column of a panel, as Grafana's maxDataPoints
TIMEOUT_SECONDS = 10.0
# ``${name}``, ``${name:format}``, ``[[name]]`` or ``$name``: Grafana's ways of writing a variable.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel as Grafana draws it: its title, its kind (``stat``, ``timeseries``, ``bargauge``), unit, queries."""

    title: str
    kind: str
    queries: tuple[Query, ...]
    unit: str = ""
    description: str = ""
    shows_name: bool = False  # a stat panel whose text is the series' name (the deployed version), not its value


@dataclass
class PanelData:
    """A panel's answer: one column per series (named by its legend), indexed by time; or why there is none."""

    panel: Panel
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return bool(self.frame.notna().to_numpy().any()) if not self.frame.empty else False


@dataclass(frozen=True)
class Window:
    """The time range asked for and the variables Grafana would set for it."""

    start: float
    end: float
    step: int
    scrape_seconds: int

    def variables(self) -> dict[str, str]:
        seconds = int(round(self.end - self.start))
        return {
            "__interval": f"{self.step}s",
            "__interval_ms": str(self.step * 1000),
            "__rate_interval": f"{max(self.step + self.scrape_seconds, 4 * self.scrape_seconds)}s",
            "__range": f"{seconds}s",
            "__range_s": str(seconds),
            "__range_ms": str(seconds * 1000),
        }


def load_dashboard(path: Path | str | None = None) -> dict:
    """A dashboard's JSON (default: the provisioned *mnist-hitl* dashboard)."""
    return json.loads(Path(path or resource(DASHBOARD)).read_text())


def dashboard_panels(dashboard: dict) -> list[Panel]:
    """Every panel with a query, in the dashboard's order (panels inside a row included)."""
    flat = []
    for panel in dashboard.get("panels", []):
        flat += [panel, *panel.get("panels", [])]  # a collapsed row holds its panels
    return [
        Panel(
            title=panel.get("title", ""),
            kind=panel.get("type", "timeseries"),
            queries=tuple(Query(t["expr"], t.get("legendFormat", "")) for t in panel["targets"] if t.get("expr")),
            unit=panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
            description=panel.get("description", ""),
            shows_name=panel.get("options", {}).get("textMode") == "name",
        )
        for panel in flat
        if any(t.get("expr") for t in panel.get("targets", []))
    ]


def template_values(dashboard: dict) -> dict[str, str]:
    """The dashboard's template variables as regular expressions: the current value, else any (``.*``)."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current", {}).get("value")
        chosen = [current] if isinstance(current, str) else list(current or [])
        chosen = [value for value in chosen if value and value != "$__all"]
        values[variable["name"]] = "|".join(chosen) if chosen else ".*"
    return values


def substitute(expr: str, variables: dict[str, str]) -> str:
    """The expression with Grafana's variables replaced; an unknown template variable matches anything."""

    def value(match: re.Match) -> str:
        name = next(group for group in match.groups() if group)
        if name in variables:
            return variables[name]
        return match.group(0) if name.startswith("__") else ".*"

    return VARIABLE.sub(value, expr)


def legend_name(legend: str, labels: dict[str, str]) -> str:
    """Grafana's legend: ``{{label}}`` filled in; with no legend, the series' labels."""
    if legend and legend != "__auto":
        return LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend)
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def prometheus_url(settings: Settings) -> str:
    """The local stack's Prometheus (``mnist-hitl prometheus``), on this machine."""
    host = "127.0.0.1" if settings.app_host in ("", "0.0.0.0", "::") else settings.app_host
    return f"http://{host}:{settings.prometheus_port}"


def scrape_seconds(client: httpx.Client) -> int:
    """Prometheus' global scrape interval, from its running config (Grafana's default when it cannot say)."""
    import yaml

    try:
        answer = client.get("/api/v1/status/config").json()
        interval = str(yaml.safe_load(answer["data"]["yaml"])["global"]["scrape_interval"])
        return max(1, round(pd.Timedelta(interval).total_seconds()))
    except Exception:
        return DEFAULT_SCRAPE_SECONDS


def make_window(minutes: float, scrape: int, end: float | None = None) -> Window:
    """The last ``minutes`` up to ``end`` (now), with a step of at least one scrape."""
    end = time.time() if end is None else end
    start = end - minutes * 60
    step = max(scrape, math.ceil((end - start) / MAX_POINTS))
    return Window(start=start, end=end, step=step, scrape_seconds=scrape)


def query_range(client: httpx.Client, expr: str, window: Window, legend: str = "") -> pd.DataFrame:
    """One expression over the window: a column per series, named by its legend, indexed by UTC time.

    Raises:
        httpx.HTTPError: Prometheus did not answer.
        ValueError: Prometheus answered with an error (its message).
    """
    params = {"query": expr, "start": window.start, "end": window.end, "step": window.step}
    response = client.get("/api/v1/query_range", params=params)
    try:
        answer = response.json()
    except ValueError:
        response.raise_for_status()
        raise ValueError(f"not a Prometheus answer (HTTP {response.status_code})") from None
    if answer.get("status") != "success":
        raise ValueError(f"{answer.get('errorType', 'error')}: {answer.get('error', response.text[:200])}")
    columns = {}
    for series in answer["data"]["result"]:
        times = pd.to_datetime([float(t) for t, _ in series["values"]], unit="s", utc=True)
        name = legend_name(legend, series["metric"])
        while name in columns:
            name += " "
        columns[name] = pd.Series([float(v) for _, v in series["values"]], index=times)
    return pd.DataFrame(columns)


def fetch_panels(url: str, panels: list[Panel], minutes: float = 60, variables: dict[str, str] | None = None):
    """Every panel's data over the last ``minutes``, from Prometheus at ``url``.

    Args:
        url: Prometheus' address (``http://host:port``).
        panels: from :func:`dashboard_panels`.
        minutes: the time window, up to now.
        variables: the dashboard's template variables (:func:`template_values`).

    Returns:
        ``(window, [PanelData, ...])``; a panel whose query failed carries the reason in ``errors``.
    """
    with httpx.Client(base_url=url.rstrip("/"), timeout=TIMEOUT_SECONDS) as client:
        window = make_window(minutes, scrape_seconds(client))
        names = {**(variables or {}), **window.variables()}
        unreachable = None
        results = []
        for panel in panels:
            data = PanelData(panel)
            frames = []
            for query in panel.queries:
                expr = substitute(query.expr, names)
                if unreachable:
                    data.errors.append(unreachable)
                    continue
                try:
                    frames.append(query_range(client, expr, window, query.legend))
                except httpx.TransportError as error:  # down or unknown: no point asking again
                    unreachable = f"Prometheus at {url} did not answer ({type(error).__name__}: {error})"
                    data.errors.append(unreachable)
                except (httpx.HTTPError, ValueError) as error:
                    data.errors.append(f"{expr}: {error}")
            data.frame = pd.concat(frames, axis=1) if frames else pd.DataFrame()
            results.append(data)
    return window, results


def headline(title: str, url: str, window: Window, results: list[PanelData]) -> str:
    """One line of Markdown: what was asked of whom, how many panels have data, and Prometheus' silence if any."""
    minutes = (window.end - window.start) / 60
    line = (
        f"**{title}** from Prometheus at {url}: the last {minutes:g} minutes (a point every {window.step} s); "
        f"**{sum(data.has_data for data in results)} of {len(results)} panels** have data."
    )
    errors = {error for data in results for error in data.errors}
    if len(errors) == 1 and all(data.errors for data in results):
        line += f" **{errors.pop()}**: is it running (`mnist-hitl prometheus`, a service of `make run`)?"
    return line


def panel_table(results: list[PanelData]) -> pd.DataFrame:
    """One row per panel: its title, kind, series with data, and what went wrong, if anything."""
    return pd.DataFrame(
        [
            {
                "panel": data.panel.title,
                "kind": data.panel.kind,
                "series": int(data.frame.notna().any().sum()) if not data.frame.empty else 0,
                "status": "; ".join(data.errors) or ("data" if data.has_data else "no data"),
                "queries": "\n".join(query.expr for query in data.panel.queries),
            }
            for data in results
        ]
    )


def write_report(
    settings: Settings, url: str | None = None, minutes: float = 60, output_dir: Path | None = None
) -> tuple[Path, Path | None]:
    """Execute ``metrics.ipynb`` against Prometheus and render it as one self-contained HTML page beside it.

    Args:
        settings: the home, and Prometheus' address when ``url`` is not given.
        url: Prometheus' address (default: :func:`prometheus_url`).
        minutes: the time window, up to now.
        output_dir: where the executed notebook and its page go (default ``runs/metrics-<time>/``).

    Returns:
        The executed notebook and its HTML page (None when it could not be rendered).
    """
    import papermill

    from mnist_hitl.clock import timestamp_id
    from mnist_hitl.learning.loop.notebooks import html_copy

    output_dir = output_dir or settings.runs_dir / f"metrics-{timestamp_id()}"
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / "metrics.ipynb"
    papermill.execute_notebook(
        str(settings.notebooks_dir / "metrics.ipynb"),
        str(executed),
        parameters={"home": str(settings.home), "prometheus": url or prometheus_url(settings), "minutes": minutes},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(output_dir),
    )
    return executed, html_copy(executed)
