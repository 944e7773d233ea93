"""The provisioned dashboard read as Grafana reads it: its panels, its queries with Grafana's variables filled in,
Prometheus' answers as frames, and panels drawn with a message when Prometheus cannot answer."""

from __future__ import annotations

import json

import httpx
import pytest

from mnist_hitl.resources import resource
from mnist_hitl.services import dashboard_plots, dashboards
from mnist_hitl.services.dashboards import Panel, Query, Window

PROVISIONED = resource(dashboards.DASHBOARD)


def test_every_panel_with_a_query_is_read_with_its_title_kind_unit_and_queries():
    raw = json.loads(PROVISIONED.read_text())["panels"]
    panels = dashboards.dashboard_panels(dashboards.load_dashboard())
    assert [p.title for p in panels] == [p["title"] for p in raw if p.get("targets")]
    assert [p.kind for p in panels] == [p["type"] for p in raw if p.get("targets")]
    assert [[q.expr for q in p.queries] for p in panels] == [[t["expr"] for t in p["targets"]] for p in raw]
    assert {p.kind for p in panels} == {"stat", "timeseries", "bargauge"}
    by_title = {p.title: p for p in panels}
    assert by_title["Prediction latency"].unit == "s"
    assert [q.legend for q in by_title["Prediction latency"].queries] == ["p50", "p95"]
    assert by_title["Deployed model"].shows_name and not by_title["Drift score"].shows_name


def test_grafanas_variables_leave_no_dollar_in_any_provisioned_query():
    board = dashboards.load_dashboard()
    window = dashboards.make_window(60, scrape=15, end=1_800_000_000)
    names = {**dashboards.template_values(board), **window.variables()}
    expressions = [dashboards.substitute(q.expr, names) for p in dashboards.dashboard_panels(board) for q in p.queries]
    assert len(expressions) >= 15 and not [e for e in expressions if "$" in e]
    assert "sum(rate(mnist_hitl_predictions_total[60s])) * 60" in expressions
    assert 'sum by (digit) (increase(mnist_hitl_labels_total{kind="correct"}[3600s]))' in expressions


@pytest.mark.parametrize(
    ("minutes", "scrape", "step", "rate_interval"),
    [(60, 15, 15, "60s"), (60, 1, 15, "16s"), (5, 1, 2, "4s"), (24 * 60, 15, 360, "375s")],
)
def test_the_window_steps_as_grafana_does(minutes, scrape, step, rate_interval):
    window = dashboards.make_window(minutes, scrape=scrape, end=1_800_000_000)
    assert window.step == step and window.end - window.start == minutes * 60
    variables = window.variables()
    assert variables["__rate_interval"] == rate_interval and variables["__interval"] == f"{step}s"
    assert variables["__range"] == f"{minutes * 60}s" and variables["__range_ms"] == str(minutes * 60_000)


def test_template_variables_take_their_current_value_or_match_anything():
    board = {
        "templating": {
            "list": [
                {"name": "node", "current": {"value": "$__all"}},
                {"name": "job", "current": {"value": "app"}},
                {"name": "route", "current": {"value": ["/predict", "/labels"]}},
                {"name": "status"},
            ]
        }
    }
    values = {**dashboards.template_values(board), "__rate_interval": "30s"}
    assert values == {"node": ".*", "job": "app", "route": "/predict|/labels", "status": ".*", "__rate_interval": "30s"}
    expr = 'rate(x{node=~"$node", job="${job}", route=~"[[route]]", status=~"${status:regex}", a=~"$other"}'
    expr += "[$__rate_interval])"
    assert dashboards.substitute(expr, values) == (
        'rate(x{node=~".*", job="app", route=~"/predict|/labels", status=~".*", a=~".*"}[30s])'
    )
    assert dashboards.substitute("x[$__unknown]", values) == "x[$__unknown]"  # Prometheus will say what is wrong


def test_legends_fill_in_labels_or_show_the_series():
    labels = {"__name__": "up", "route": "/predict", "status": "200"}
    assert dashboards.legend_name("{{route}} {{ status }}", labels) == "/predict 200"
    assert dashboards.legend_name("", labels) == 'up{route="/predict", status="200"}'
    assert dashboards.legend_name("__auto", {"status": "500"}) == '{status="500"}'


def prometheus(answer: dict, status: int = 200) -> httpx.Client:
    return httpx.Client(
        base_url="http://prometheus", transport=httpx.MockTransport(lambda _: httpx.Response(status, json=answer))
    )


def test_a_range_answer_becomes_a_column_per_series_indexed_by_time():
    result = [
        {"metric": {"route": "/predict"}, "values": [[1_800_000_000, "1"], [1_800_000_015, "2.5"]]},
        {"metric": {"route": "/labels"}, "values": [[1_800_000_015, "NaN"]]},
    ]
    answer = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    window = Window(start=1_800_000_000, end=1_800_000_015, step=15, scrape_seconds=15)
    frame = dashboards.query_range(prometheus(answer), "x", window, legend="{{route}}")
    assert list(frame.columns) == ["/predict", "/labels"] and len(frame) == 2
    assert frame["/predict"].tolist() == [1.0, 2.5] and str(frame.index.tz) == "UTC"


def test_a_prometheus_error_is_raised_with_its_message():
    answer = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    window = Window(start=0, end=60, step=15, scrape_seconds=15)
    with pytest.raises(ValueError, match='bad_data: parse error: unexpected "}"'):
        dashboards.query_range(prometheus(answer, status=400), "x}", window)


def test_without_prometheus_every_panel_is_drawn_with_the_reason():
    panels = dashboards.dashboard_panels(dashboards.load_dashboard())
    window, results = dashboards.fetch_panels("http://127.0.0.1:9", panels, minutes=5)
    assert len(results) == len(panels) and window.scrape_seconds == dashboards.DEFAULT_SCRAPE_SECONDS
    assert all(len(data.errors) == len(data.panel.queries) and not data.has_data for data in results)
    assert all("Prometheus at http://127.0.0.1:9 did not answer" in data.errors[0] for data in results)
    assert "did not answer" in dashboards.headline("mnist-hitl", "http://127.0.0.1:9", window, results)
    figures = dashboard_plots.draw_dashboard(results, window)
    assert len(figures) == 1 + sum(p.kind != "stat" for p in panels)
    table = dashboards.panel_table(results)
    assert table["panel"].tolist() == [p.title for p in panels] and table["status"].str.contains("did not answer").all()


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.9234, "percentunit", "92.3%"),
        (0.004, "s", "4 ms"),
        (90, "s", "1.5 min"),
        (2.5, "reqps", "2.5/s"),
        (1_800_000_000_000, "dateTimeAsIso", "2027-01-15 08:00:00"),
        (12345, "short", "12,345"),
        (float("nan"), "short", "–"),
    ],
)
def test_values_are_written_in_the_panels_unit(value, unit, text):
    assert dashboard_plots.format_value(value, unit) == text


def test_a_stat_panel_shows_the_last_value_or_the_series_name():
    import pandas as pd

    frame = pd.DataFrame({"v2": [None, 1.0], "v3": [1.0, None]})
    named = dashboards.PanelData(Panel("Deployed", "stat", (Query("x"),), shows_name=True), frame)
    assert dashboard_plots.stat_text(named) == "v2\nv3"
    valued = dashboards.PanelData(Panel("Rate", "stat", (Query("x"),), unit="percentunit"), frame[["v2"]])
    assert dashboard_plots.stat_text(valued) == "100.0%"
    assert dashboard_plots.stat_text(dashboards.PanelData(valued.panel)) == "No data"


def test_a_panel_with_one_failed_query_is_drawn_with_the_error_beside_its_title():
    import pandas as pd

    frame = pd.DataFrame({"p50": [0.1, 0.2]}, index=pd.to_datetime([1_800_000_000, 1_800_000_015], unit="s", utc=True))
    panel = Panel("Latency", "timeseries", (Query("a", "p50"), Query("b{", "p95")), unit="s")
    data = dashboards.PanelData(panel, frame, ["b{: bad_data: parse error"])
    (axes,) = dashboard_plots.draw_panel(data).axes
    assert [line.get_label() for line in axes.get_lines()] == ["p50"]
    assert axes.get_title("left") == "Latency" and "parse error" in axes.get_title("right")
