"""The stack's Prefect server refuses what any web page could send it: requests naming another host
(DNS rebinding), cross-origin reads, and changes without a CSRF token. Its own clients still work
(the flow served to it: tests/test_loop_flow.py).

Runs the ``prefect`` line of the Procfile with the environment ``mnist-hitl run`` gives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from mnist_hitl.clock import wait_for
from mnist_hitl.config import Settings
from mnist_hitl.resources import resource
from mnist_hitl.services.stack import stack_environment
from tests.support.helpers import free_port

pytestmark = pytest.mark.slow
EVIL = "http://evil.example"


def request(url: str, method: str = "GET", headers: dict | None = None, body: dict | None = None):
    """Status, headers and body of a request; an HTTP error is an answer too."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=30) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


@pytest.fixture
def prefect_server(home: Settings, tmp_path) -> Iterator[str]:
    """The Procfile's Prefect server on a free port; yields its base URL."""
    from honcho.environ import parse_procfile

    settings = home.replace(prefect_port=free_port())
    settings.prefect_home.mkdir(parents=True)
    command = parse_procfile(resource("Procfile").read_text()).processes["prefect"]
    with open(tmp_path / "prefect.log", "w") as log:
        server = subprocess.Popen(
            command,
            shell=True,
            env=stack_environment(settings),
            cwd=settings.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{settings.prefect_port}"
    try:
        assert wait_for(f"{base}/api/health", timeout=120), (tmp_path / "prefect.log").read_text()[-3000:]
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def test_a_request_naming_another_host_is_refused(prefect_server: str):
    port = prefect_server.rsplit(":", 1)[1]
    assert request(f"{prefect_server}/api/health", headers={"Host": f"evil.example:{port}"})[0] == 400
    assert request(f"{prefect_server}/", headers={"Host": "evil.example"})[0] == 400  # the UI too
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert request(f"{prefect_server}/api/health", headers={"Host": host})[0] == 200, host


def test_another_origin_may_not_read_or_send_cross_origin(prefect_server: str):
    preflight = {
        "Origin": EVIL,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, headers, _ = request(f"{prefect_server}/api/flows/filter", "OPTIONS", preflight)
    assert status >= 400 and headers.get("access-control-allow-origin") not in (EVIL, "*")
    status, headers, _ = request(f"{prefect_server}/api/health", headers={"Origin": EVIL})
    assert status == 200 and headers.get("access-control-allow-origin") is None  # the page cannot read it
    # the server's own origin (its UI) may
    status, headers, _ = request(
        f"{prefect_server}/api/flows/filter", "OPTIONS", {**preflight, "Origin": prefect_server}
    )
    assert status == 200 and headers.get("access-control-allow-origin") == prefect_server


def test_a_change_without_a_csrf_token_is_refused(prefect_server: str):
    status, _, body = request(f"{prefect_server}/api/flows/", "POST", body={"name": "planted"})
    assert status == 403 and "CSRF" in body
    status, _, _ = request(f"{prefect_server}/api/flows/filter", "POST", {"Origin": EVIL}, body={})
    assert status == 403
    # a client that asks for a token first (the Prefect client and UI do) is served
    client = str(uuid.uuid4())
    status, _, body = request(f"{prefect_server}/api/csrf-token?client={client}")
    assert status == 200
    token = {"Prefect-Csrf-Token": json.loads(body)["token"], "Prefect-Csrf-Client": client}
    status, _, body = request(f"{prefect_server}/api/flows/", "POST", token, body={"name": "wanted"})
    assert status in (200, 201), body
