"""Scale-out of the learning cycle: a Prefect server on PostgreSQL, the cycle on a work pool, a worker runs it."""

from __future__ import annotations

import subprocess

import psutil
import psycopg
import pytest

from mnist_hitl.clock import wait_for
from mnist_hitl.learning.loop.cycle import last_cycle
from mnist_hitl.store import open_store
from tests.support.helpers import free_port, run_cli, start_cli
from tests.support.scale import environment, stop, wait_until

pytestmark = pytest.mark.slow
POOL = "cycles"


def test_the_worker_command_refuses_without_a_work_pool(home):
    done = run_cli(home, "worker", extra_env={"MNIST_HITL_WORK_POOL": ""}, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: no work pool: set MNIST_HITL_WORK_POOL (the pool `mnist-hitl schedule` deploys the cycle to)"
    ]


def test_a_worker_runs_the_cycle_that_schedule_deployed_to_a_work_pool(home_with_model, postgres_url, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = f"http://127.0.0.1:{free_port()}/api"
    env = environment(home_with_model, PREFECT_API_URL=api, MNIST_HITL_WORK_POOL=POOL, PREFECT_WORKER_QUERY_SECONDS="1")
    prefect_database = postgres_url.replace("postgresql+psycopg://", "postgresql+asyncpg://")
    logs = {name: tmp_path / f"{name}.log" for name in ("server", "schedule", "worker")}
    processes = []
    try:
        with open(logs["server"], "w") as log:
            server_env = {**env, "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database}
            options = ["--host", "127.0.0.1", "--port", api.split(":")[2].split("/")[0]]
            processes.append(start_cli(server_env, "prefect-server", *options, stdout=log, stderr=subprocess.STDOUT))
        assert wait_for(f"{api}/health", timeout=120), logs["server"].read_text()[-3000:]

        with open(logs["schedule"], "w") as log:
            processes.append(start_cli(env, "schedule", stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: "deployed (id" in logs["schedule"].read_text(), 90, "the deployment", logs["schedule"])
        with open(logs["worker"], "w") as log:
            processes.append(start_cli(env, "worker", stdout=log, stderr=subprocess.STDOUT))

        with temporary_settings(updates={PREFECT_API_URL: api}):
            run = run_deployment(
                "hitl-cycle/scheduled", parameters={"force_retrain": False}, timeout=150, poll_interval=1
            )
        assert run.state.is_completed(), f"{run.state}\n{logs['worker'].read_text()[-3000:]}"
        assert run.work_pool_name == POOL
        assert str(run.id) in logs["worker"].read_text()  # this worker picked it up, in a process of its own
        with open_store(home_with_model) as store:
            assert last_cycle(store)["outcome"] == "no_new_data"  # the cycle ran on the worker's home
        worker = psutil.Process(processes[2].pid)  # a supervisor: the flow run imported what it needed, not the worker
        assert worker.is_running() and not any("tensorflow" in m.path for m in worker.memory_maps())

        # the schedule went to the pool, not to a server in the schedule process; its records are in PostgreSQL
        with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as db:
            (deployment,) = db.execute(
                "SELECT d.name, d.concurrency_limit, d.paused, p.name, p.type, s.schedule FROM deployment d"
                " JOIN work_queue q ON q.id = d.work_queue_id JOIN work_pool p ON p.id = q.work_pool_id"
                " JOIN deployment_schedule s ON s.deployment_id = d.id"
            ).fetchall()
            assert deployment[:5] == ("scheduled", 1, False, POOL, "process")
            assert deployment[5]["cron"] == "0 * * * *"
            assert db.execute("SELECT state_type FROM flow_run WHERE id = %s", (run.id,)).fetchone() == ("COMPLETED",)
        assert "serving" not in logs["schedule"].read_text()

        stop(processes[1])  # the scheduler stops; the deployment keeps its schedule for the workers
        assert processes[1].returncode == 0, logs["schedule"].read_text()[-3000:]
        with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as db:
            assert db.execute("SELECT paused FROM deployment").fetchall() == [(False,)]
    finally:
        for process in reversed(processes):
            stop(process)
