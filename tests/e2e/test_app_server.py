"""The drawing app's server is safe to leave running: it answers only to its own host names, frees the
kernels of pages nobody uses, caps the pages holding one, and shows no traceback to a browser.

Plain HTTP against a real Voila (``serve.running_app``): a ``GET /`` hands the page a kernel, as a
browser's page load does, but never connects to it.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest

from mnist_hitl.app.command import RunningApp, running_app
from mnist_hitl.config import Settings

pytestmark = pytest.mark.slow


def get(url: str, host: str | None = None) -> tuple[int, str]:
    """Status and body of a GET, with another ``Host`` header if given."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def kernels(app: RunningApp) -> list[psutil.Process]:
    """The server's kernel processes (each started with its own ``kernel-<id>.json``)."""
    found = []
    for child in psutil.Process(app.process.pid).children(recursive=True):
        try:
            if "kernel-" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def wait_for_kernels(app: RunningApp, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while len(kernels(app)) != count and time.monotonic() < deadline:
        time.sleep(0.5)
    return len(kernels(app))


def wait_for_page(app: RunningApp, timeout: float) -> int:
    """The status of a page load, asked again every second while the app answers it is busy."""
    deadline = time.monotonic() + timeout
    while (status := get(app.url)[0]) == 503 and time.monotonic() < deadline:
        time.sleep(1)
    return status


def test_the_app_answers_only_to_its_own_host_names(home_with_model: Settings, tmp_path: Path):
    settings = home_with_model.replace(extra_hosts="drawing.example")
    with running_app(settings, pool_size=1, log=tmp_path / "voila.log") as app:
        port = app.settings.app_port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"drawing.example:{port}"):
            assert get(f"{app.url}metrics", host)[0] == 200, host
        for path in ("", "metrics", "voila/static/favicon.ico"):  # the page, the metrics, a static file
            status, body = get(app.url + path, f"evil.example:{port}")
            assert status == 400, (path, status)
            assert "draw" not in body.lower()
        assert len(kernels(app)) == 1  # the refused page load took no kernel from the pool


def test_pages_over_the_cap_get_a_clear_busy_page(home_with_model: Settings, tmp_path: Path):
    settings = home_with_model.replace(app_max_kernels=2)
    with running_app(settings, pool_size=1, log=tmp_path / "voila.log") as app:
        for load in range(2):
            status, body = get(app.url)
            assert status == 200 and "busy" not in body, load
        status, body = get(app.url)
        assert status == 503
        assert "The drawing app is busy" in body and "2 pages at once" in body and "try again" in body
        assert "Traceback" not in body
        # the file a page asks for is still served, and the cap holds: 2 pages + the preheated pool
        assert get(f"{app.url}voila/static/favicon.ico")[0] == 200
        assert get(app.url)[0] == 503
        assert len(kernels(app)) <= 2 + 1


def test_kernels_of_pages_nobody_connects_to_are_shut_down_after_the_idle_time(
    home_with_model: Settings, tmp_path: Path
):
    settings = home_with_model.replace(app_kernel_idle_seconds=3, app_max_kernels=1)
    with running_app(settings, pool_size=1, log=tmp_path / "voila.log") as app:
        assert get(app.url)[0] == 200  # the page takes the preheated kernel, the pool starts another
        assert get(app.url)[0] == 503  # the cap (1) holds while it lives
        assert wait_for_kernels(app, 2, timeout=90) == 2
        assert wait_for_kernels(app, 1, timeout=60) == 1, app.log.read_text()[-3000:]  # the pool's kernel stays
        assert "Culling" in app.log.read_text()
        # its place is free again once the kernel manager has finished shutting the culled kernel down
        # (its process ends first; on a loaded machine the manager lets it go a few seconds later)
        assert wait_for_page(app, timeout=30) == 200, app.log.read_text()[-3000:]


def test_a_failing_cell_shows_no_traceback_in_the_browser(home_with_model: Settings, tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("print('the app starts')"),
            nbformat.v4.new_code_cell("raise RuntimeError('internal detail 4711')"),
        ]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, notebooks / "draw.ipynb")
    settings = home_with_model.replace(notebooks_override=notebooks)
    with running_app(settings, pool_size=1, log=tmp_path / "voila.log") as app:
        status, body = get(app.url)
    assert status == 200
    assert "internal detail 4711" not in body and "Traceback" not in body and "RuntimeError" not in body
    assert "internal detail 4711" in app.log.read_text()  # the server's log has it


def test_by_default_an_idle_app_holds_no_kernel_and_a_page_starts_its_own(home_with_model: Settings, tmp_path: Path):
    assert home_with_model.app_warm_kernels == 0
    with running_app(home_with_model, pool_size=home_with_model.app_warm_kernels, log=tmp_path / "voila.log") as app:
        time.sleep(2)
        assert kernels(app) == []  # nothing held in reserve while nobody draws
        status, body = get(app.url)
        assert status == 200 and "busy" not in body and "Traceback" not in body
        assert "jupyter-widgets" in body or "application/vnd.jupyter.widget" in body  # the app's widgets were made
        assert len(kernels(app)) == 1  # the page's own, and none started in reserve
