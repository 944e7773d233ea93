"""The API under faults: a full disk, a stalled database, clients that send nothing. It answers, and comes back."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mnist_hitl.config import Settings
from tests.support.api import PNG, closed_by_server, digit_png, idle_connections, stop, wait_until_ready
from tests.support.helpers import free_port, start_cli
from tests.support.small_disk import start_on_small_disk, wait_for_file

# The API on the small disk; the test says when to fill the disk and when to free it, by files in $SIGNALS.
API_ON_SMALL_DISK = """
"$CLI" api --port "$PORT" > "$SIGNALS/api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null' EXIT
until [ -e "$SIGNALS/fill" ]; do sleep 0.05; done
fill_the_disk
touch "$SIGNALS/filled"
until [ -e "$SIGNALS/free" ]; do sleep 0.05; done
rm "$DISK/fill"
touch "$SIGNALS/freed"
wait $api
"""


def test_a_full_disk_is_a_507_and_the_api_lives_on(home_with_model: Settings, tmp_path: Path) -> None:
    signals, port = tmp_path / "signals", free_port()
    signals.mkdir()
    env = {**os.environ, "SIGNALS": str(signals), "PORT": str(port)}
    script = start_on_small_disk(API_ON_SMALL_DISK, home_with_model.models_dir, tmp_path, env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, script, signals / "api.log")
        first = httpx.post(f"{url}/predict", content=digit_png(), headers=PNG, timeout=30)
        assert first.status_code == 200, first.text
        (signals / "fill").touch()
        wait_for_file(signals / "filled", script)

        answers = []
        for _ in range(3):
            try:
                answers.append(httpx.post(f"{url}/predict", content=digit_png(1), headers=PNG, timeout=30))
            except httpx.TransportError as error:
                answers.append(error)
        assert httpx.get(f"{url}/health/live", timeout=30).status_code == 200, "the API died on the full disk"
        for answer in answers:
            assert answer.status_code == 507 and "full" in answer.json()["detail"], answer.text
        label = httpx.post(f"{url}/predictions/1/labels", json={"label": 3, "kind": "correct"}, timeout=30)
        assert label.status_code == 507, label.text
        assert httpx.get(f"{url}/predictions/1", timeout=30).json()["labels"] == []
        assert script.poll() is None, (signals / "api.log").read_text()

        (signals / "free").touch()
        wait_for_file(signals / "freed", script)
        again = httpx.post(f"{url}/predict", content=digit_png(1), headers=PNG, timeout=30)
        assert again.status_code == 200 and again.json()["prediction_id"] == 2, again.text
    finally:
        stop(script)
    assert "Traceback" not in (signals / "api.log").read_text()


def postgres_processes(data: Path) -> list[int]:
    """The server's postmaster and every process it started."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == postmaster:
            children.append(int(status.parent.name))
    return [postmaster, *children]


@pytest.fixture
def api_on_postgres(home_with_model: Settings, postgres_url: str, tmp_path: Path) -> Iterator[str]:
    port, log_path = free_port(), tmp_path / "api.log"
    env = {**os.environ, "MNIST_HITL_HOME": str(home_with_model.home), "MNIST_HITL_DATABASE_URL": postgres_url}
    env["MNIST_HITL_HEALTH_TIMEOUT"] = "1"
    with open(log_path, "wb") as log:
        process = start_cli(
            env, "api", "--port", str(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", process, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_a_stalled_database_leaves_the_api_live_and_says_it_is_not_ready(api_on_postgres: str, postgres) -> None:
    url = api_on_postgres
    assert httpx.post(f"{url}/predict", content=digit_png(), headers=PNG, timeout=30).status_code == 200
    stalled = postgres_processes(postgres.data)
    late: list[httpx.Response] = []
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        waiting = threading.Thread(
            target=lambda: late.append(httpx.post(f"{url}/predict", content=digit_png(1), headers=PNG, timeout=120))
        )
        waiting.start()
        assert httpx.get(f"{url}/health/live", timeout=10).json() == {"status": "live"}
        ready = httpx.get(f"{url}/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.headers["retry-after"], ready.text
        assert "did not answer" in ready.json()["detail"] and ready.json()["model_version"], ready.text
        assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    waiting.join(timeout=120)
    assert late and late[0].status_code == 200, late
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health/ready", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the API did not get ready again after the database came back"
        time.sleep(0.2)


def test_a_database_that_goes_down_is_a_503_with_retry_after_and_comes_back(
    home_with_model: Settings, tmp_path: Path
) -> None:
    from bench.support import Postgres

    server = Postgres().start()
    pg_ctl = [str(server.bin / "pg_ctl"), "-D", str(server.data), "-w"]
    port, log_path = free_port(), tmp_path / "api.log"
    extra = {"MNIST_HITL_DATABASE_URL": server.new_database(), "MNIST_HITL_DATABASE_CONNECT_TIMEOUT": "2"}
    with open(log_path, "wb") as log:
        process = start_cli(home_with_model, "api", "--port", str(port), extra_env=extra, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log_path)
        assert httpx.post(f"{url}/predict", content=digit_png(), headers=PNG, timeout=30).status_code == 200
        server._run(*pg_ctl, "-m", "immediate", "stop")
        down = httpx.post(f"{url}/predict", content=digit_png(1), headers=PNG, timeout=30)
        assert down.status_code == 503 and int(down.headers["retry-after"]) > 0, down.text
        assert "cannot reach" in down.json()["detail"]
        ready = httpx.get(f"{url}/health/ready", timeout=30)
        assert ready.status_code == 503 and ready.headers["retry-after"] and ready.json()["store"] != "ok"
        assert httpx.get(f"{url}/health/live", timeout=30).status_code == 200
        server._run(*pg_ctl, "-l", str(server.folder / "log"), "restart")  # the same options as at its start
        deadline = time.monotonic() + 30
        while (again := httpx.post(f"{url}/predict", content=digit_png(2), headers=PNG, timeout=30)).status_code != 200:
            assert again.status_code == 503 and time.monotonic() < deadline, again.text
            time.sleep(0.2)
        import psycopg

        with psycopg.connect(extra["MNIST_HITL_DATABASE_URL"].replace("+psycopg", "")) as database:
            stored = database.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        assert stored == 2, "a refused prediction was stored"  # (ids jump after a crash: PostgreSQL's sequences)
    finally:
        process.terminate()
        process.wait(timeout=20)
        with contextlib.suppress(RuntimeError):  # stopped already, if the test failed while it was down
            server._run(*pg_ctl, "-m", "immediate", "stop")
        shutil.rmtree(server.folder, ignore_errors=True)


def test_clients_that_send_nothing_or_dawdle_are_closed_and_counted(home_with_model: Settings, tmp_path: Path) -> None:
    port, log_path = free_port(), tmp_path / "api.log"
    extra = {"MNIST_HITL_SERVER_READ_TIMEOUT": "1", "MNIST_HITL_SERVER_MAX_CONNECTIONS": "20"}
    with open(log_path, "wb") as log:
        process = start_cli(
            home_with_model, "api", "--port", str(port), extra_env=extra, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log_path)
        silent = idle_connections(port, 30)
        dawdling = idle_connections(port, 5)
        for connection in dawdling:
            connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        # More connections than allowed: a request meanwhile is refused with a 503, not queued for ever.
        assert httpx.get(f"{url}/health/live", timeout=30).status_code == 503
        assert all(closed_by_server(connection) for connection in silent + dawdling)
        assert httpx.get(f"{url}/health/live", timeout=30).status_code == 200
        try:  # headers past MNIST_HITL_SERVER_MAX_HEADER_BYTES: a 400, and the connection closed under the sender
            oversized = httpx.get(f"{url}/health/live", headers={"X-Filler": "x" * 2_000_000}, timeout=30).status_code
        except httpx.TransportError:
            oversized = "closed"
        assert oversized in (400, "closed")
        assert httpx.get(f"{url}/health/live", timeout=30).status_code == 200 and process.poll() is None
    finally:
        for connection in locals().get("silent", []) + locals().get("dawdling", []):
            connection.close()
        process.terminate()
        process.wait(timeout=20)


def test_an_export_corrupted_in_place_shows_in_readiness_while_the_model_serves(home_with_model: Settings) -> None:
    from fastapi.testclient import TestClient

    from mnist_hitl.api import create_app
    from mnist_hitl.model import deployed_model

    with TestClient(create_app(home_with_model)) as client:
        assert client.get("/health/ready").json()["model_files"] == "ok"
        export = deployed_model(home_with_model.models_dir).tflite_path
        export.write_bytes(b"\0" * export.stat().st_size)  # rewritten in place, same size
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and "corrupt" in ready.json()["model_files"], ready.text
        assert "reload or a restart would fail" in ready.json()["model_files"]
        assert client.post("/predict", content=digit_png(), headers=PNG).status_code == 200


def test_without_a_model_a_503_says_when_to_try_again(home: Settings) -> None:
    from fastapi.testclient import TestClient

    from mnist_hitl.api import create_app

    with TestClient(create_app(home)) as client:
        for answer in (client.post("/predict", content=digit_png(), headers=PNG), client.get("/health/ready")):
            assert answer.status_code == 503 and int(answer.headers["retry-after"]) > 0, answer.text
        ready = client.get("/health/ready").json()
        assert ready["store"] == "ok" and ready["model_version"] is None and "no model" in ready["detail"]
