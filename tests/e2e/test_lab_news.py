"""`mnist-hitl lab` opens without asking about Jupyter's news: the question is answered for this home, once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from mnist_hitl.services import lab
from tests.support.helpers import free_port, start_cli

TOKEN = "a-token-for-the-news-test-0123456789"
NEWS = "@jupyterlab/apputils-extension:notification"


def test_the_news_question_is_answered_and_a_users_choice_is_kept(home) -> None:
    folder = lab.lab_user_settings(home)
    news = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    assert json.loads(news.read_text())["fetchNews"] == "false"
    news.write_text(json.dumps({"fetchNews": "true"}))  # changed in the UI since
    assert lab.lab_user_settings(home) == folder and json.loads(news.read_text()) == {"fetchNews": "true"}
    assert f"--LabApp.user_settings_dir={folder}" in lab.lab_command(home, home.home)


def read_settings(url: str, process: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "mnist-hitl lab stopped"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return json.loads(answer.read())
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_the_running_lab_never_asks_to_fetch_news(home, tmp_path) -> None:
    port = free_port()
    with open(tmp_path / "lab.log", "w") as log:
        process = start_cli(
            home,
            *("lab", "--port", str(port)),
            extra_env={"MNIST_HITL_LAB_TOKEN": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        settings = read_settings(f"http://127.0.0.1:{port}/lab/api/settings/{NEWS}?token={TOKEN}", process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert settings["settings"]["fetchNews"] == "false" and settings["settings"]["checkForUpdates"] is False
