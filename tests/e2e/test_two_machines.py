"""Two machines with no shared disk: users label on one, a cycle on the other learns from them and promotes,
and the first serves the new champion without a restart.

Shared, as in docker-compose's ``scale`` profile: the store's PostgreSQL database, an MLflow server on
PostgreSQL that serves the artifacts, and Prefect's server on PostgreSQL. Machine A holds the champion,
deploys the cycle to a work pool and runs that pool's worker. Machine B (``MNIST_HITL_MODEL_SOURCE=registry``)
serves the registry's champion: its follower fetches it, a running app's Workbench predicts with it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.learning import tracking
from mnist_hitl.learning.loop.cycle import last_cycle
from mnist_hitl.model import DEPLOYED_POINTER, deployed_model
from mnist_hitl.store import Store
from tests.support.helpers import start_cli
from tests.support.loop import TINY_RETRAIN, draw_and_label
from tests.support.scale import (
    cycle_home,
    environment,
    publish,
    start_mlflow_server,
    start_prefect_server,
    stop,
    wait_until,
)

pytestmark = pytest.mark.slow
POOL = "cycles"


@pytest.fixture
def network(quick_models: Path):
    """The session's quick model as a Keras network: machine A publishes it as the champion."""
    from mnist_hitl.learning.retrain.network import load_model

    return load_model(deployed_model(quick_models).keras_path)


def pointer(models: Path) -> dict:
    try:
        return json.loads((models / DEPLOYED_POINTER).read_text())
    except (OSError, ValueError):
        return {}


def test_a_cycle_on_one_machine_learns_the_labels_of_another_which_then_serves_its_champion(
    home, quick_models, network, postgres, tmp_path, monkeypatch
):
    started = time.monotonic()
    mlflow = start_mlflow_server(tmp_path / "mlflow-server", postgres.new_database("mlflow"))
    prefect = start_prefect_server(tmp_path / "prefect-server", postgres.new_database("prefect"))
    store_url = postgres.new_database("store")
    logs = {name: tmp_path / f"{name}.log" for name in ("schedule", "worker", "follow")}
    processes, bench = [], None
    try:
        mlflow.wait()
        shared = {"MNIST_HITL_DATABASE_URL": store_url, "MLFLOW_TRACKING_URI": mlflow.url}
        # machine A: the champion, deployed on its disk and registered; then the cycle's deployment and worker
        a = cycle_home(
            tmp_path / "machine-a", quick_models, mlflow.url, database_url=store_url, model_source="registry"
        )
        monkeypatch.setenv("MNIST_HITL_HOME", str(a.home))  # this process's metrics: A's while it publishes
        champion, _ = publish(a, network)
        a_env = environment(
            a,
            **shared,
            **TINY_RETRAIN,
            MNIST_HITL_MODEL_SOURCE="registry",
            PREFECT_API_URL=prefect.url,
            MNIST_HITL_WORK_POOL=POOL,
            PREFECT_WORKER_QUERY_SECONDS="1",
            # only the run this test asks for: no label-count trigger, no scheduled run but at midnight
            MNIST_HITL_RETRAIN_EVERY_LABELS="1000000",
            MNIST_HITL_CYCLE_MINUTES="1440",
        )
        # machine B: an empty home, the registry's champion fetched by its follower
        b = home.replace(
            home=tmp_path / "machine-b",
            database_url=store_url,
            mlflow_tracking_uri=mlflow.url,
            model_source="registry",
            registry_poll_seconds=0.5,
        )
        b_env = environment(b, **shared, MNIST_HITL_MODEL_SOURCE="registry", MNIST_HITL_REGISTRY_POLL_SECONDS="0.5")
        processes.append(start(b_env, "follow", logs["follow"]))
        prefect.wait()
        processes.append(start(a_env, "schedule", logs["schedule"]))
        wait_until(lambda: "deployed (id" in logs["schedule"].read_text(), 90, "the deployment", logs["schedule"])
        processes.append(start(a_env, "worker", logs["worker"]))

        # B serves the champion; users draw and label there, in the app's Workbench, started once
        wait_until(lambda: pointer(b.models_dir).get("version") == champion, 60, "B's follower", logs["follow"])
        monkeypatch.setenv("MNIST_HITL_HOME", str(b.home))
        from mnist_hitl.workbench import Workbench

        bench = Workbench(b, source="app")
        counts = draw_and_label(b, 160, seed=11, workbench=bench)
        assert counts["versions"] == {champion} and counts["corrections"] >= 20
        labelled = time.monotonic()

        # a cycle, asked of the Prefect server, run by A's worker
        run = run_cycle_on_the_pool(prefect.url)
        assert run.state.is_completed(), f"{run.state}\n{logs['worker'].read_text()[-3000:]}"
        assert str(run.id) in logs["worker"].read_text()
        cycled = time.monotonic()
        with Store(b.store_location) as store:
            summary = last_cycle(store)  # from the shared store
        assert summary["outcome"] == "promoted", summary
        new = summary["model_version"]
        assert new != champion and tracking.champion(b)["version"] == new  # the registry's champion moved
        assert (a.runs_dir / f"cycle-{summary['cycle_id']}").is_dir()  # the cycle ran on A

        # B's Workbench, not restarted, predicts with the new champion as soon as its follower fetched it
        wait_until(lambda: pointer(b.models_dir).get("version") == new, 60, "B to follow", logs["follow"])
        picture = np.zeros((280, 280), dtype=np.uint8)
        picture[60:220, 130:150] = 255  # a one
        assert bench.predict_picture(picture).model_version == new
        switched = time.monotonic()

        # the cycle learned from exactly the labels written on B
        with Store(store_url) as store:
            pairs = store.labelled_predictions(0)
            record = {row["version"]: row for row in store.model_versions()}[new]
        assert summary["new_labels"] == len(pairs) == 160
        assert {p.source for p, _ in pairs} == {"app"} and {p.model_version for p, _ in pairs} == {champion}
        assert summary["through_label_id"] == max(label.id for _, label in pairs)
        assert record["status"] == "deployed" and record["details"]["cycle_id"] == summary["cycle_id"]

        # B holds what its follower fetched (both champions' two files, byte for byte A's) and nothing of A's
        fetched = [f"model_{version}.{kind}" for version in (champion, new) for kind in ("keras", "tflite")]
        assert sorted(p.name for p in b.models_dir.iterdir()) == sorted([DEPLOYED_POINTER, *fetched])
        for name in fetched:
            assert (b.models_dir / name).read_bytes() == (a.models_dir / name).read_bytes(), name
        assert not (b.home / "mlflow").exists() and not b.runs_dir.exists()
        assert list((tmp_path / "mlflow-server").rglob(f"keras/model_{new}.keras"))  # it came through the server
        for one, other in ((a, b), (b, a)):
            assert str(other.home) not in (one.models_dir / DEPLOYED_POINTER).read_text()
        print(
            f"\ntwo machines: set up and labelled in {labelled - started:.0f} s, cycle {cycled - labelled:.0f} s, "
            f"B serving {new} {switched - cycled:.1f} s later; {time.monotonic() - started:.0f} s in all"
        )
    finally:
        if bench is not None:
            bench.close()
        for process in reversed(processes):
            stop(process)
        for server in (prefect, mlflow):
            stop(server.process)


def start(env: dict[str, str], command: str, log: Path) -> subprocess.Popen:
    """``mnist-hitl COMMAND`` in a session of its own (stopped with its children), its output in ``log``."""
    with open(log, "w") as output:
        return start_cli(env, command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def run_cycle_on_the_pool(api: str):
    """What the label-count trigger does: a retraining run of the cycle's deployment, here waited for."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return run_deployment("hitl-cycle/scheduled", parameters={"force_retrain": True}, timeout=300, poll_interval=1)
