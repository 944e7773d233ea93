"""A real Prometheus scrapes the exporter and the app server; every dashboard query returns data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from mnist_hitl.app.command import running_app
from mnist_hitl.services.tools import prometheus_config
from tests.support.helpers import REPO, free_port, start_cli

ROOT = REPO
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
DATASOURCES = ROOT / "dashboards" / "grafana" / "provisioning" / "datasources"
# Grafana's variables, as Grafana would set them for a short time range scraped every second.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__range": "1h", "$__interval": "1s"}

USER_SESSION = str(REPO / "tests" / "support" / "user_session.py")
# What the learning-loop flow publishes after a cycle.
FLOW = """
import sys
from mnist_hitl import metrics
metrics.record_monitor(0.2, {d: d / 20 for d in range(10)}, labels_waiting=int(sys.argv[1]))
metrics.record_cycle("promoted")
"""
# Someone using the HTTP API: a readiness check and a prediction id that does not exist (nothing stored).
API_CLIENT = """
from fastapi.testclient import TestClient
from mnist_hitl.api import create_app
with TestClient(create_app(), base_url="http://127.0.0.1") as client:  # an allowed host name
    assert client.get("/health/ready").status_code == 200
    assert client.get("/predictions/999999").status_code == 404
"""


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query in every provisioned dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
    return found


def provisioned_datasource() -> dict:
    (source,) = [s for path in DATASOURCES.glob("*.yml") for s in yaml.safe_load(path.read_text())["datasources"]]
    return source


def test_every_dashboard_panel_uses_the_provisioned_datasource():
    source = provisioned_datasource()
    expected = {"type": source["type"], "uid": source["uid"]}
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"] == expected, panel["title"]
            assert all(target["datasource"] == expected for target in panel["targets"]), panel["title"]
    assert len(dashboard_queries()) >= 15


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
def test_prometheus_scrapes_the_metrics_and_every_dashboard_query_returns_data(
    home_with_model, processes, tmp_path, require_binary
):
    require_binary("prometheus", "prometheus")
    settings = home_with_model.replace(app_port=free_port(), metrics_port=free_port(), prometheus_port=free_port())
    env = {**os.environ, "MNIST_HITL_HOME": str(settings.home)}
    logs = tmp_path / "logs"
    logs.mkdir()

    def log_file(name: str):
        return open(logs / f"{name}.log", "w")

    processes.append(
        start_cli(
            env, "metrics", "--port", str(settings.metrics_port), stdout=log_file("exporter"), stderr=subprocess.STDOUT
        )
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(settings, scrape_interval="1s"))
    processes.append(
        subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            ],
            env=env,
            stdout=log_file("prometheus"),
            stderr=subprocess.STDOUT,
        )
    )
    api = f"http://127.0.0.1:{settings.prometheus_port}/api/v1"

    def query(expression: str) -> list:
        url = f"{api}/query?" + urllib.parse.urlencode({"query": expression})
        answer = json.loads(get(url))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def targets_up() -> bool:
        active = json.loads(get(f"{api}/targets"))["data"]["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"} == {"mnist-hitl", "app", "prometheus"}

    with running_app(settings, port=settings.app_port, pool_size=1, log=logs / "app.log"):
        try:
            wait_until(targets_up, 120, "Prometheus to scrape the exporter, the app and itself")
            expected = 0
            for rounds, count in enumerate((8, 6), 1):  # two rounds, so every counter is seen before it grows
                worker = subprocess.run(
                    [sys.executable, USER_SESSION, str(expected), str(count)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                assert worker.returncode == 0, worker.stderr
                flow = subprocess.run(
                    [sys.executable, "-c", FLOW, str(count)], env=env, capture_output=True, text=True, timeout=60
                )
                assert flow.returncode == 0, flow.stderr
                client = subprocess.run(
                    [sys.executable, "-c", API_CLIENT], env=env, capture_output=True, text=True, timeout=120
                )
                assert client.returncode == 0, client.stderr
                assert get(f"http://127.0.0.1:{settings.app_port}/", timeout=60)  # a page view
                expected += count
                wait_until(
                    lambda total=expected: [
                        r for r in query("sum(mnist_hitl_predictions_total)") if float(r["value"][1]) == total
                    ],
                    30,
                    f"{expected} predictions in Prometheus",
                )
                wait_until(  # the API client's two requests a round
                    lambda total=2 * rounds: [
                        r
                        for r in query("sum(mnist_hitl_http_request_duration_seconds_count)")
                        if float(r["value"][1]) == total
                    ],
                    30,
                    f"{2 * rounds} API requests in Prometheus",
                )

            empty = []
            for title, expression in dashboard_queries():
                for name, value in GRAFANA_VARIABLES.items():
                    expression = expression.replace(name, value)
                result = query(expression)
                if not any(math.isfinite(float(series["value"][1])) for series in result):
                    empty.append(f"{title}: {expression} -> {result}")
            assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

            # The app server's own HTTP metrics: the page view, by handler and status code.
            pages = 'sum(http_request_duration_seconds_count{job="app", handler=~".*VoilaHandler", status_code="200"})'
            wait_until(lambda: [r for r in query(pages) if float(r["value"][1]) == 2], 30, "the two page views")
        except AssertionError:
            for log in sorted(logs.iterdir()):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            raise


def record_traffic(env: dict, api: str, rounds: int = 2, count: int = 5) -> None:
    """Users draw and label, the flow publishes a cycle, the HTTP API is asked; ``rounds`` times, each one scraped."""

    def seen(expression: str, total: int) -> bool:
        url = f"{api}/query?" + urllib.parse.urlencode({"query": expression})
        return any(float(r["value"][1]) == total for r in json.loads(get(url))["data"]["result"])

    for done_rounds in range(1, rounds + 1):
        start = str((done_rounds - 1) * count)
        for command in ([USER_SESSION, start, str(count)], ["-c", FLOW, str(count)], ["-c", API_CLIENT]):
            done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stderr
        predictions, requests = done_rounds * count, 2 * done_rounds
        wait_until(lambda n=predictions: seen("sum(mnist_hitl_predictions_total)", n), 30, f"{predictions} predictions")
        wait_until(
            lambda n=requests: seen("sum(mnist_hitl_http_request_duration_seconds_count)", n),
            30,
            f"{requests} requests",
        )


@pytest.mark.slow
def test_metrics_notebook_draws_every_dashboard_panel_from_a_real_prometheus(
    home_with_model, processes, tmp_path, require_binary
):
    from html import escape

    import nbformat

    from mnist_hitl.services import dashboards
    from tests.support.helpers import run_cli

    require_binary("prometheus", "prometheus")
    settings = home_with_model.replace(metrics_port=free_port(), prometheus_port=free_port())
    env = {**os.environ, "MNIST_HITL_HOME": str(settings.home)}
    processes.append(start_cli(env, "metrics", "--port", str(settings.metrics_port), stdout=subprocess.DEVNULL))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(settings, scrape_interval="1s"))
    address = f"127.0.0.1:{settings.prometheus_port}"
    processes.append(
        subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    api, url = f"http://{address}/api/v1", f"http://{address}"

    def exporter_scraped() -> bool:
        active = json.loads(get(f"{api}/targets"))["data"]["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"} >= {"mnist-hitl", "prometheus"}

    wait_until(exporter_scraped, 120, "Prometheus to scrape the exporter")
    record_traffic(env, api)
    time.sleep(3)  # a few more scrapes: every rate has two points after the last round

    # The module: every panel of the dashboard, with data where the exporter has some (no app runs here).
    board = dashboards.load_dashboard()
    panels = dashboards.dashboard_panels(board)
    broken = dashboards.Panel("Broken", "timeseries", (dashboards.Query("sum(rate(x[5m])"),))
    window, results = dashboards.fetch_panels(url, [*panels, broken], minutes=5)
    assert window.scrape_seconds == 1
    by_title = {data.panel.title: data for data in results}
    assert by_title["Broken"].errors and "parse error" in by_title["Broken"].errors[0]
    app_only = {p.title for p in panels if all('job="app"' in q.expr for q in p.queries)}
    assert app_only == {"App server requests by status", "App server latency"}
    without = sorted(data.panel.title for data in results[:-1] if not data.has_data or data.errors)
    assert without == sorted(app_only), [(d.panel.title, d.errors) for d in results if not d.has_data]
    for title in ("HTTP API requests by route and status", "Prediction rate", "Labels: confirmations and corrections"):
        frame = by_title[title].frame
        assert not frame.empty and frame.notna().to_numpy().any() and (frame.fillna(0) > 0).to_numpy().any(), title
    requests = by_title["HTTP API requests by route and status"].frame.columns
    assert {"/health/ready 200", "/predictions/{prediction_id} 404"} <= set(requests)

    # The notebook, as `mnist-hitl dashboards` runs it: every panel drawn, one HTML page.
    report = tmp_path / "report"
    done = run_cli(
        env, "dashboards", "--prometheus-url", url, "--minutes", "5", "--output-dir", str(report), timeout=300
    )
    paths = json.loads(done.stdout)
    assert paths == {"notebook": str(report / "metrics.ipynb"), "html": str(report / "metrics.html")}
    executed = nbformat.read(report / "metrics.ipynb", as_version=4)
    outputs = [output for cell in executed.cells for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1 + sum(p.kind != "stat" for p in panels)
    page = (report / "metrics.html").read_text()
    assert page.count('src="data:image/png;base64') == 1 + sum(p.kind != "stat" for p in panels)
    assert "<script src=" not in page  # self-contained
    assert [p.title for p in panels if escape(p.title) not in page] == []
    assert f"<strong>{len(panels) - len(app_only)} of {len(panels)} panels</strong> have data" in page
