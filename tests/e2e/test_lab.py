"""`mnist-hitl lab`: JupyterLab on the notebooks behind a token; in headless Chromium, history.ipynb opened in it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from bench.support import CHROMIUM
from mnist_hitl.resources import resource
from mnist_hitl.services import lab
from tests.support.helpers import free_port, start_cli

TOKEN = "a-token-for-the-test-only-0123456789"


def test_in_a_checkout_lab_opens_the_repositorys_notebooks(home):
    assert lab.lab_folder(home) == resource("notebooks")


def test_installed_lab_opens_a_working_copy_that_keeps_the_users_edits(home, monkeypatch):
    monkeypatch.setattr(lab, "in_checkout", lambda path: False)  # as from a wheel
    folder = lab.lab_folder(home)
    assert folder == home.home / "notebooks"
    names = {path.name for path in resource("notebooks").glob("*.ipynb")}
    assert {path.name for path in folder.glob("*.ipynb")} == names >= {"history.ipynb", "retrain.ipynb"}
    (folder / "history.ipynb").write_text("{}")  # a person's edit
    (folder / "monitor.ipynb").unlink()  # a copy thrown away
    lab.lab_folder(home)
    assert (folder / "history.ipynb").read_text() == "{}"
    assert (folder / "monitor.ipynb").read_bytes() == (resource("notebooks") / "monitor.ipynb").read_bytes()
    assert lab.lab_folder(home.replace(notebooks_override=home.home / "mine")) == home.home / "mine"


def test_the_token_is_the_setting_or_a_new_one_and_stays_off_the_command_line(home):
    generated = lab.with_token(home)
    assert len(generated.lab_token) >= 32 and generated.lab_token != lab.with_token(home).lab_token
    settings = lab.with_token(home.replace(lab_token=TOKEN))
    assert settings.lab_token == TOKEN and lab.lab_url(settings).endswith(f":8888/lab?token={TOKEN}")
    command = lab.lab_command(settings, home.home, port=9999)
    assert "--ServerApp.port=9999" in command and "--ServerApp.ip=127.0.0.1" in command
    assert not any(TOKEN in part for part in command)
    environment = lab.lab_environment(settings)
    assert environment["JUPYTER_TOKEN"] == TOKEN and environment["MNIST_HITL_HOME"] == str(home.home)


def wait_for_lab(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "mnist-hitl lab stopped"
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.mark.browser
def test_jupyterlab_opens_the_history_notebook_in_a_browser(home, tmp_path):
    from playwright.sync_api import sync_playwright

    port = free_port()
    with open(tmp_path / "lab.log", "w") as log:
        process = start_cli(
            home,
            "lab",
            "--port",
            str(port),
            extra_env={"MNIST_HITL_LAB_TOKEN": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_lab(f"http://127.0.0.1:{port}/api", process)
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token, no notebooks
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=10)
        assert refused.value.code == 403
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1300, "height": 1000})
                page.set_default_timeout(90_000)
                page.goto(f"http://127.0.0.1:{port}/lab/tree/history.ipynb?token={TOKEN}")
                title = page.locator(".jp-MarkdownOutput h1").first
                title.wait_for()
                assert "is the loop making the model better for our users?" in title.inner_text()
                # JupyterLab renders only the cells in view: the first code cell shows the notebook's own code
                page.locator(".jp-CodeCell", has_text="history.load_history(settings").first.wait_for()
            finally:
                browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert "Serving notebooks from local directory" in (tmp_path / "lab.log").read_text()
