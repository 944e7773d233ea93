"""``metrics.ipynb`` by hand with no Prometheus running: it runs to its end and every panel says why it is empty.

With a real Prometheus: tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import nbformat
import papermill

from mnist_hitl.services import dashboards
from tests.support.helpers import free_port


def test_the_metrics_notebook_declares_its_parameters(home):
    assert set(papermill.inspect_notebook(str(home.notebooks_dir / "metrics.ipynb"))) >= {
        "home",
        "prometheus",
        "minutes",
        "dashboard",
    }


def test_without_prometheus_the_metrics_notebook_draws_every_panel_with_the_reason(home, tmp_path):
    settings = home.replace(prometheus_port=free_port())  # nothing listens there
    executed, page = dashboards.write_report(settings, minutes=10, output_dir=tmp_path / "report")
    outputs = [o for cell in nbformat.read(executed, as_version=4).cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    panels = dashboards.dashboard_panels(dashboards.load_dashboard())
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1 + sum(p.kind != "stat" for p in panels)
    html = page.read_text()
    assert f"Prometheus at http://127.0.0.1:{settings.prometheus_port} did not answer" in html
    assert f"<strong>0 of {len(panels)} panels</strong> have data" in html
