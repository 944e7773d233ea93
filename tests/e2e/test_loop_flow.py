"""The Prefect side: the `hitl-cycle` flow runs the cycle's stages as tasks, and is served on a schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from mnist_hitl.learning.loop.cycle import last_cycle
from mnist_hitl.resources import resource
from mnist_hitl.store import open_store
from tests.support.helpers import free_port, start_cli

pytestmark = pytest.mark.slow
FLOW = resource("flows") / "hitl_cycle.py"


def environment(settings, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "MLFLOW_TRACKING_URI"}
    return {**env, "MNIST_HITL_HOME": str(settings.home), "PREFECT_HOME": str(settings.prefect_home), **extra}


def outcome_of_last_cycle(settings) -> str:
    with open_store(settings) as store:
        return last_cycle(store)["outcome"]


def api(url: str, body: dict | None = None) -> dict | list:
    """GET, or POST ``body``, with the CSRF token the server asks for (as the Prefect client does)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if body is not None:
        client = str(uuid.uuid4())
        with urllib.request.urlopen(f"{url.split('/api/')[0]}/api/csrf-token?client={client}", timeout=10) as answer:
            headers.update({"Prefect-Csrf-Token": json.loads(answer.read())["token"], "Prefect-Csrf-Client": client})
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_one_flow_run_without_a_server(home):
    done = subprocess.run(
        [sys.executable, str(FLOW), "--once"],
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'outcome': 'no_new_data'" in done.stdout
    log = done.stdout + done.stderr
    assert "Task run 'prepare" in log and "Task run 'record" in log  # the stages ran as Prefect tasks
    assert outcome_of_last_cycle(home) == "no_new_data"


def test_the_schedule_is_served_to_a_local_prefect_server(home):
    port = free_port()
    env = environment(
        home, MNIST_HITL_PREFECT_PORT=str(port), MNIST_HITL_CYCLE_MINUTES="60", PREFECT_RUNNER_POLL_FREQUENCY="2"
    )
    base = f"http://127.0.0.1:{port}/api"
    log_path = home.home / "schedule.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        schedule = start_cli(env, "schedule", stdout=log, stderr=subprocess.STDOUT)
    try:
        deployment = None
        deadline = time.monotonic() + 180
        while deployment is None and time.monotonic() < deadline and schedule.poll() is None:
            try:
                deployment = api(f"{base}/deployments/name/hitl-cycle/scheduled")
            except OSError:
                time.sleep(1)
        assert deployment, log_path.read_text()[-3000:]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 * * * *"]
        assert all(s["active"] for s in deployment["schedules"])
        # the server's scheduler (a background service of the server) turns the schedule into runs
        scheduled = []
        deadline = time.monotonic() + 60
        while not scheduled and time.monotonic() < deadline:
            time.sleep(1)
            scheduled = api(
                f"{base}/flow_runs/filter",
                {
                    "deployments": {"id": {"any_": [deployment["id"]]}},
                    "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                },
            )
        assert scheduled, "the server's scheduler made no run of the schedule"

        # a run of the deployment is picked up by the served flow and runs a cycle
        run = api(f"{base}/deployments/{deployment['id']}/create_flow_run", {})
        state = None
        deadline = time.monotonic() + 120
        while state not in ("COMPLETED", "FAILED", "CRASHED") and time.monotonic() < deadline:
            time.sleep(1)
            state = api(f"{base}/flow_runs/{run['id']}")["state_type"]
        assert state == "COMPLETED", log_path.read_text()[-3000:]
        assert outcome_of_last_cycle(home) == "no_new_data"
    finally:
        schedule.send_signal(signal.SIGTERM)
        try:
            schedule.wait(60)
        except subprocess.TimeoutExpired:
            schedule.kill()
    time.sleep(1)
    with pytest.raises(OSError):  # the server it started is gone with it
        api(f"{base}/health")
