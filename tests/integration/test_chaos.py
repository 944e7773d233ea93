"""Chaos, in small: one ``mnist-hitl api`` under steady load meets each fault of issue 21 in turn.

The API runs on a small tmpfs (:mod:`tests.support.small_disk`) under a shell loop that starts it
again whenever it dies, as a service manager would. Clients predict and label throughout, and note
each write the API acknowledged. In turn: ``kill -9`` twice under load, the deployed export broken
in place while serving, the disk full, and more silent and dawdling connections than the server
allows. After each, with nobody repairing anything: serving comes back (a prediction is stored
and labelled again), every acknowledged prediction and label is stored exactly once, and the
SQLite file passes ``PRAGMA integrity_check``. The store and the model are on the tmpfs, which the
test reaches through the script's mount namespace (``/proc/<pid>/root``, ``nsenter``).

The faults one at a time, with their details, are in tests/integration/api/test_faults.py; the
label-order watermark under racing writers is tests/integration/store/test_label_order.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import encode_png
from tests.support.api import PNG, closed_by_server, idle_connections, stop, wait_until_ready
from tests.support.helpers import free_port
from tests.support.small_disk import check_mounted, start_on_small_disk, wait_for_file

# The API, started again whenever it dies, until $SIGNALS/stop; the disk filled and freed on signal files.
SUPERVISED_API = """
( while [ ! -e "$SIGNALS/stop" ]; do
    "$CLI" api --port "$PORT" >> "$SIGNALS/api.log" 2>&1 &
    echo $! > "$SIGNALS/api.pid.new" && mv "$SIGNALS/api.pid.new" "$SIGNALS/api.pid"
    wait $! || true
  done ) &
supervisor=$!
until [ -e "$SIGNALS/fill" ]; do sleep 0.05; done
fill_the_disk
touch "$SIGNALS/filled"
until [ -e "$SIGNALS/free" ]; do sleep 0.05; done
rm "$DISK/fill"
touch "$SIGNALS/freed"
until [ -e "$SIGNALS/stop" ]; do sleep 0.05; done
kill "$(cat "$SIGNALS/api.pid")" 2>/dev/null || true
wait $supervisor
"""
CLIENTS = 3
LIMITS = {"MNIST_HITL_SERVER_READ_TIMEOUT": "1", "MNIST_HITL_SERVER_MAX_CONNECTIONS": "30"}


class Load:
    """Client threads that predict a digit never sent before, then label it, noting what was acknowledged."""

    def __init__(self, url: str) -> None:
        data = load_bundled()
        self.pictures = np.concatenate([data.x_test, data.x_train])
        self.digits = np.concatenate([data.y_test, data.y_train])
        self.url, self.next, self.lock = url, 0, threading.Lock()
        self.predictions: dict[int, int] = {}  # acknowledged: prediction id -> picture index
        self.labels: dict[int, tuple[int, int]] = {}  # acknowledged: label id -> (prediction id, digit)
        self.statuses: Counter = Counter()
        self.running = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        self.running.set()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running.clear()
        for thread in self.threads:
            thread.join(60)

    def _send(self, client: httpx.Client, method: str, path: str, **options) -> httpx.Response | None:
        try:
            answer = client.request(method, f"{self.url}{path}", timeout=10, **options)
        except httpx.TransportError as error:
            self.statuses[type(error).__name__] += 1
            time.sleep(0.05)
            return None
        self.statuses[answer.status_code] += 1
        return answer

    def _client(self) -> None:
        with httpx.Client() as client:
            while self.running.is_set():
                with self.lock:
                    index, self.next = self.next, self.next + 1
                answer = self._send(client, "POST", "/predict", content=encode_png(self.pictures[index]), headers=PNG)
                if answer is None or answer.status_code != 200:
                    time.sleep(0.05)  # a fresh picture next time: a write never acknowledged is not sent again
                    continue
                prediction_id, digit = answer.json()["prediction_id"], int(self.digits[index])
                with self.lock:
                    assert prediction_id not in self.predictions, f"prediction id {prediction_id} acknowledged twice"
                    self.predictions[prediction_id] = index
                body = {"label": digit, "kind": "correct"}
                answer = self._send(client, "POST", f"/predictions/{prediction_id}/labels", json=body)
                if answer is not None and answer.status_code == 201:
                    with self.lock:
                        self.labels[answer.json()["label_id"]] = (prediction_id, digit)

    def acknowledged(self) -> tuple[int, int]:
        with self.lock:
            return len(self.predictions), len(self.labels)

    def wait_for_writes(self, more: int = 5, within: float = 90) -> None:
        """Serving came back by itself: ``more`` predictions and labels acknowledged from now on."""
        before = self.acknowledged()
        deadline = time.monotonic() + within
        while any(now < then + more for now, then in zip(self.acknowledged(), before, strict=True)):
            assert time.monotonic() < deadline, f"serving did not come back: {self.statuses}"
            time.sleep(0.1)


# Run inside the script's mount namespace: SQLite resolves /proc/<pid>/root to this process's own root.
READ_STORE = """
import hashlib, json, sqlite3, sys
with sqlite3.connect(sys.argv[1], timeout=30) as db:
    print(json.dumps({
        "integrity": db.execute("PRAGMA integrity_check").fetchall(),
        "pictures": {i: hashlib.sha256(png).hexdigest() for i, png in db.execute("SELECT id, png FROM predictions")},
        "labels": {i: [p, label] for i, p, label in db.execute("SELECT id, prediction_id, label FROM labels")},
    }))
"""


def check_store(script: subprocess.Popen, store: Path, load: Load) -> None:
    """Every acknowledged prediction and label stored exactly once, and a sound SQLite file."""
    with load.lock:
        predictions, labels = dict(load.predictions), dict(load.labels)
    command = ["nsenter", "--target", str(script.pid), "--user", "--mount", "--preserve-credentials"]
    read = subprocess.run([*command, sys.executable, "-c", READ_STORE, str(store)], capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    found = json.loads(read.stdout)
    assert found["integrity"] == [["ok"]]
    pictures = {int(i): digest for i, digest in found["pictures"].items()}
    stored_labels = {int(i): tuple(row) for i, row in found["labels"].items()}
    copies = Counter(pictures.values())
    assert not [i for i in predictions if i not in pictures], "an acknowledged prediction is missing"
    assert [i for i in predictions if copies[pictures[i]] != 1] == [], "an acknowledged prediction is stored twice"
    assert {i: stored_labels.get(i) for i in labels} == labels, "an acknowledged label is missing or changed"
    per_prediction = Counter(prediction for prediction, _ in stored_labels.values())
    assert [i for i, _ in labels.values() if per_prediction[i] != 1] == [], "a label sent once is stored twice"


def kill_api(signals: Path) -> int:
    pid = int((signals / "api.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.usefixtures("home")  # a clean environment: no database URL of the caller's
def test_under_load_kill_9_a_broken_model_a_full_disk_and_slow_clients_lose_nothing_and_serving_returns(
    quick_models: Path, tmp_path: Path
) -> None:
    signals, port = tmp_path / "signals", free_port()
    signals.mkdir()
    env = {**os.environ, "SIGNALS": str(signals), "PORT": str(port), **LIMITS}
    script = start_on_small_disk(SUPERVISED_API, quick_models, tmp_path, env, size_kib=16384, start_new_session=True)
    url, log = f"http://127.0.0.1:{port}", signals / "api.log"
    home_on_disk = tmp_path / "disk" / "home"
    on_disk, store = Path(f"/proc/{script.pid}/root{home_on_disk}"), home_on_disk / "store.sqlite"
    try:
        try:
            wait_until_ready(url, script, log)
        except AssertionError:
            check_mounted(script)
            raise
        with Load(url) as load:
            load.wait_for_writes()

            # kill -9 under load, twice: the loop starts the API again, nothing acknowledged is lost
            for _ in range(2):
                killed = kill_api(signals)
                deadline = time.monotonic() + 60
                while int((signals / "api.pid").read_text()) == killed:
                    assert time.monotonic() < deadline, "the API was not started again"
                    time.sleep(0.05)
                load.wait_for_writes()
                check_store(script, store, load)

            # the deployed export broken in place while serving: readiness says so, the model in memory serves on
            export = on_disk / "models" / json.loads((on_disk / "models" / "latest.json").read_text())["tflite"]
            original = export.read_bytes()
            export.write_bytes(b"\0" * len(original))
            ready = httpx.get(f"{url}/health/ready", timeout=10)
            assert ready.status_code == 200 and "corrupt" in ready.json()["model_files"], ready.text
            load.wait_for_writes()
            export.write_bytes(original)
            assert httpx.get(f"{url}/health/ready", timeout=10).json()["model_files"] == "ok"
            check_store(script, store, load)

            # the disk full: writes are refused (507), the process lives; freed, writes resume
            refused = load.statuses[507]
            (signals / "fill").touch()
            wait_for_file(signals / "filled", script)
            deadline = time.monotonic() + 30
            while load.statuses[507] < refused + 3:
                assert time.monotonic() < deadline, f"no 507 on the full disk: {load.statuses}"
                time.sleep(0.05)
            assert httpx.get(f"{url}/health/live", timeout=10).status_code == 200
            (signals / "free").touch()
            wait_for_file(signals / "freed", script)
            load.wait_for_writes()
            check_store(script, store, load)

            # more silent and dawdling clients than the server allows: closed after the read timeout
            silent, dawdling = idle_connections(port, 40), idle_connections(port, 5)
            try:
                for connection in dawdling:
                    connection.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert all(closed_by_server(connection) for connection in silent + dawdling)
            finally:
                for connection in silent + dawdling:
                    connection.close()
            load.wait_for_writes()
        check_store(script, store, load)
        predictions, labels = load.acknowledged()
        assert predictions > 50 and labels > 50, load.statuses
    finally:
        (signals / "stop").touch()
        try:
            script.wait(30)
        except subprocess.TimeoutExpired:
            stop(script)
    api_log = log.read_text()
    assert "Traceback" not in api_log, api_log[-3000:]
