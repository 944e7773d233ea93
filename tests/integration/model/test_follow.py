"""A node with no shared disk serves the registry's champion: fetched, checked, switched to without a restart.

The cycle's machine and the serving node are two home folders; all they share is the MLflow
tracking URI (a SQLite registry, or a real ``mlflow server`` on PostgreSQL that serves the artifacts).
The champion's Keras file comes too, so a cycle node with no shared disk retrains from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning import tracking
from mnist_hitl.learning.loop.cycle import CycleFailed, prepare_cycle
from mnist_hitl.learning.retrain import deployment
from mnist_hitl.model import DEPLOYED_POINTER, ModelFileError, Predictor, deployed_model
from mnist_hitl.model.follow import Follower, RegistryError, champion_export, follow, sync_from_registry
from mnist_hitl.services.exporter import exporter_registry
from mnist_hitl.services.stack import busy_ports, services, stack_environment
from mnist_hitl.store import Store
from tests.support.helpers import free_port, run_cli
from tests.support.scale import cycle_home, publish, start_mlflow_server, stop


@pytest.fixture(scope="module")
def network(quick_models: Path):
    """The session's quick model as a Keras network: what the cycle saves and registers as a challenger."""
    from mnist_hitl.learning.retrain.network import load_model

    return load_model(deployed_model(quick_models).keras_path)


@pytest.fixture
def cycle(tmp_path: Path, quick_models: Path, home: Settings) -> Settings:
    return cycle_home(tmp_path / "cycle", quick_models)


@pytest.fixture
def serving(home: Settings, cycle: Settings) -> Settings:
    """The serving node: an empty home of its own (MNIST_HITL_HOME: its metrics), the same registry."""
    return home.replace(model_source="registry", mlflow_tracking_uri=cycle.tracking_uri, registry_poll_seconds=0.2)


def pointer(settings: Settings) -> dict:
    return json.loads((settings.models_dir / DEPLOYED_POINTER).read_text())


def artifact(cycle: Settings, version: str, kind: str = "tflite") -> Path:
    """The export (``tflite``) or the Keras file (``keras``) of ``version`` in the cycle's artifact store."""
    folder = tracking.LITERT_ARTIFACTS if kind == "tflite" else tracking.KERAS_ARTIFACTS
    (found,) = cycle.mlflow_artifacts_dir.rglob(f"{folder}/model_{version}.{kind}")
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forget_keras_file(cycle: Settings, mlflow_version: str) -> None:
    """Make a registered version look like an older mnist-hitl's: no Keras file named in its tags."""
    for tag in (tracking.KERAS_FILE_TAG, tracking.KERAS_SHA256_TAG):
        tracking.client(cycle).delete_model_version_tag(tracking.REGISTERED_MODEL, mlflow_version, tag)


def load_failures(settings: Settings) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for family in exporter_registry(settings).collect()
        for sample in family.samples
        if sample.name == "mnist_hitl_model_load_failures_total"
    }


def follow_in_background(settings: Settings) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(settings, stop), daemon=True)
    thread.start()
    return thread, stop


def test_a_registered_version_carries_its_litert_export_and_its_keras_file(cycle, network):
    version, mlflow_version = publish(cycle, network)
    tags = tracking.client(cycle).get_model_version(tracking.REGISTERED_MODEL, mlflow_version).tags
    export, keras_file = (cycle.models_dir / f"model_{version}.{kind}" for kind in ("tflite", "keras"))
    assert tags[tracking.LITERT_FILE_TAG] == export.name
    assert tags[tracking.LITERT_SHA256_TAG] == sha256(export)
    assert tags[tracking.KERAS_FILE_TAG] == keras_file.name
    assert tags[tracking.KERAS_SHA256_TAG] == sha256(keras_file)
    assert float(tags[tracking.ACCURACY_TAG]) == pytest.approx(0.97)
    assert artifact(cycle, version).read_bytes() == export.read_bytes()
    assert artifact(cycle, version, "keras").read_bytes() == keras_file.read_bytes()  # the file, as saved


def test_the_first_model_is_registered_with_its_export(quick_models):
    settings = get_settings().replace(home=quick_models.parent)  # the home `init` trained and registered in
    deployed = deployed_model(quick_models)
    wanted = champion_export(settings)
    assert (wanted.version, wanted.file, wanted.sha256, wanted.keras_file, wanted.keras_sha256) == (
        deployed.version,
        deployed.tflite_path.name,
        deployed.tflite_sha256,
        deployed.keras_path.name,
        sha256(deployed.keras_path),
    )
    assert wanted.holdout_accuracy == pytest.approx(deployed.holdout_accuracy)


def test_a_serving_node_fetches_the_champion_checks_it_and_serves_it(cycle, serving, network, digit):
    version, _ = publish(cycle, network)
    assert sync_from_registry(serving) == version

    deployed = pointer(serving)
    export, keras_file = (cycle.models_dir / f"model_{version}.{kind}" for kind in ("tflite", "keras"))
    assert deployed["version"] == version and deployed["keras"] == keras_file.name
    assert deployed["tflite"] == export.name
    assert deployed["tflite_sha256"] == sha256(export)
    assert deployed["holdout_accuracy"] == pytest.approx(0.97)
    assert sorted(p.name for p in serving.models_dir.iterdir()) == sorted(
        [DEPLOYED_POINTER, export.name, keras_file.name]
    )
    probabilities, used = Predictor(serving.models_dir).predict(digit)
    assert used == version
    np.testing.assert_allclose(probabilities, Predictor(cycle.models_dir).predict(digit)[0], atol=1e-6)
    # the champion's Keras file, byte for byte: what a retraining on this node starts from
    assert deployment.deployed_keras_path(serving).read_bytes() == keras_file.read_bytes()

    stamp = {p.name: p.stat().st_ino for p in serving.models_dir.iterdir()}
    assert sync_from_registry(serving) is None  # served already: nothing is written
    assert {p.name: p.stat().st_ino for p in serving.models_dir.iterdir()} == stamp
    (serving.models_dir / keras_file.name).unlink()  # a Keras file gone (or damaged) is fetched again
    assert sync_from_registry(serving) == version
    assert sha256(serving.models_dir / keras_file.name) == sha256(keras_file)


def test_a_version_registered_without_a_keras_file_is_served_alone(cycle, serving, network, digit):
    version, mlflow_version = publish(cycle, network)
    forget_keras_file(cycle, mlflow_version)
    assert champion_export(serving).keras_file is None
    assert sync_from_registry(serving) == version
    assert pointer(serving)["keras"] is None
    assert sorted(p.name for p in serving.models_dir.iterdir()) == [DEPLOYED_POINTER, f"model_{version}.tflite"]
    assert Predictor(serving.models_dir).predict(digit)[1] == version
    # Everything that reads the pointer copes with no Keras file; a retraining says why it cannot start.
    assert deployment.has_deployed_model(serving) and deployed_model(serving.models_dir).keras_path is None
    with pytest.raises(ModelFileError, match="names no Keras file"):
        deployment.deployed_keras_path(serving)


def test_a_cycle_node_starts_from_the_registrys_champion(cycle, serving, network, quick_models, tmp_path):
    version, _ = publish(cycle, network)
    node = serving  # a second cycle node: an empty home of its own, MNIST_HITL_MODEL_SOURCE=registry
    with Store(node.db_path) as store:
        plan = prepare_cycle(node, store, "test", force_retrain=True)
    assert plan.reconciled[0] == f"fetched the registry's champion {version}"
    assert sha256(deployment.deployed_keras_path(node)) == sha256(cycle.models_dir / f"model_{version}.keras")

    # A node whose own disk holds an older champion starts from the registry's all the same.
    stale = cycle_home(tmp_path / "stale", quick_models, cycle.tracking_uri, model_source="registry")
    assert deployed_model(stale.models_dir).version != version
    with Store(stale.db_path) as store:
        prepare_cycle(stale, store, "test", force_retrain=True)
    assert deployment.deployed_keras_path(stale).name == f"model_{version}.keras"
    # And one that cannot reach the registry does not start at all.
    down = node.replace(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    unreachable = "cannot start from the registry's champion: .* does not answer"
    with Store(down.db_path) as store, pytest.raises(CycleFailed, match=unreachable):
        prepare_cycle(down, store, "test", force_retrain=True)


def test_a_running_predictor_switches_to_a_promoted_version_without_a_restart(cycle, serving, network, digit):
    first, first_mlflow = publish(cycle, network)
    sync_from_registry(serving)
    predictor = Predictor(serving.models_dir)
    assert predictor.predict(digit)[1] == first

    thread, stop = follow_in_background(serving)
    try:
        second, _ = publish(cycle, network)
        deadline = time.monotonic() + 60
        while predictor.predict(digit)[1] != second and time.monotonic() < deadline:
            time.sleep(0.1)
        assert predictor.predict(digit)[1] == second
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()

    # Back to the first champion: its files are cached here and pass their checksums, so they are not
    # fetched again (the registry's copies are gone).
    artifact(cycle, first).unlink()
    artifact(cycle, first, "keras").unlink()
    tracking.mark_promotion(cycle, first_mlflow, first, True, ["rolled back by a test"])
    assert sync_from_registry(serving) == first
    assert predictor.predict(digit)[1] == first


def test_a_wrong_checksum_tag_is_refused_once_and_the_previous_model_keeps_serving(
    cycle, serving, network, digit, caplog
):
    first, _ = publish(cycle, network)
    sync_from_registry(serving)
    predictor = Predictor(serving.models_dir)
    predictor.predict(digit)
    second, second_mlflow = publish(cycle, network)
    tracking.client(cycle).set_model_version_tag(
        tracking.REGISTERED_MODEL, second_mlflow, tracking.LITERT_SHA256_TAG, "0" * 64
    )

    with pytest.raises(ModelFileError, match=f"refused {second}") as refused:
        sync_from_registry(serving)
    assert refused.value.reason == "checksum_mismatch"
    assert pointer(serving)["version"] == first and predictor.predict(digit)[1] == first
    assert not (serving.models_dir / f"model_{second}.tflite").exists()
    assert load_failures(serving)["checksum_mismatch"] == 1

    # The follower says it once, and does not fetch a refused export again until the champion moves.
    follower = Follower(serving)
    with caplog.at_level(logging.INFO, logger="mnist_hitl.model.follow"):
        assert follower.step() is None and follower.step() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"still serving {first}" in errors[0], errors
    assert load_failures(serving)["checksum_mismatch"] == 2
    assert predictor.predict(digit)[1] == first


def test_a_tampered_export_is_refused_and_a_damaged_cache_is_fetched_again(cycle, serving, network, digit):
    first, _ = publish(cycle, network)
    sync_from_registry(serving)
    predictor = Predictor(serving.models_dir)
    predictor.predict(digit)
    second, second_mlflow = publish(cycle, network)
    source = artifact(cycle, second)
    good = source.read_bytes()

    source.write_bytes(good[:-100] + bytes(100))  # changed in the registry's store after registration
    with pytest.raises(ModelFileError, match="SHA-256") as refused:
        sync_from_registry(serving)
    assert refused.value.reason == "checksum_mismatch"
    garbage = np.random.default_rng(0).bytes(len(good))  # checksum tag and export agree, but LiteRT cannot load it
    source.write_bytes(garbage)
    tracking.client(cycle).set_model_version_tag(
        tracking.REGISTERED_MODEL, second_mlflow, tracking.LITERT_SHA256_TAG, hashlib.sha256(garbage).hexdigest()
    )
    with pytest.raises(ModelFileError) as refused:
        sync_from_registry(serving)
    assert refused.value.reason == "unloadable"
    assert pointer(serving)["version"] == first and predictor.predict(digit)[1] == first
    assert not (serving.models_dir / f"model_{second}.tflite").exists()

    source.write_bytes(good)
    tracking.client(cycle).set_model_version_tag(
        tracking.REGISTERED_MODEL, second_mlflow, tracking.LITERT_SHA256_TAG, hashlib.sha256(good).hexdigest()
    )
    keras_source = artifact(cycle, second, "keras")
    keras_good = keras_source.read_bytes()
    keras_source.write_bytes(keras_good[:-100] + bytes(100))  # the Keras file changed in the registry's store
    with pytest.raises(ModelFileError, match="its Keras file .* does not match the SHA-256") as refused:
        sync_from_registry(serving)
    assert refused.value.reason == "checksum_mismatch"
    assert pointer(serving)["version"] == first and predictor.predict(digit)[1] == first
    assert not (serving.models_dir / f"model_{second}.keras").exists()
    keras_source.write_bytes(keras_good)
    cached = serving.models_dir / f"model_{second}.tflite"
    cached.write_bytes(garbage)  # a damaged copy in the cache is never served: fetched again
    assert sync_from_registry(serving) == second
    assert cached.read_bytes() == good and predictor.predict(digit)[1] == second
    cached.write_bytes(garbage)  # the deployed export damaged on disk: fetched again, the pointer rewritten
    assert sync_from_registry(serving) == second
    assert cached.read_bytes() == good and Predictor(serving.models_dir).predict(digit)[1] == second


def test_an_unreachable_registry_changes_nothing_and_is_said_once(home, quick_models, caplog):
    shutil.copytree(quick_models, home.models_dir)
    before = (home.models_dir / DEPLOYED_POINTER).read_bytes()
    version = deployed_model(home.models_dir).version
    down = home.replace(
        model_source="registry", mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}", registry_poll_seconds=0.1
    )
    with pytest.raises(RegistryError, match="does not answer"):
        sync_from_registry(down)
    with pytest.raises(RegistryError, match="has no champion yet"):
        sync_from_registry(home.replace(model_source="registry"))  # a registry of its own, empty

    with caplog.at_level(logging.INFO, logger="mnist_hitl.model.follow"):
        thread, stop = follow_in_background(down)
        time.sleep(1.0)  # several polls
        stop.set()
        thread.join(timeout=30)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "does not answer" in errors[0] and f"still serving {version}" in errors[0], errors
    assert (home.models_dir / DEPLOYED_POINTER).read_bytes() == before
    assert Predictor(home.models_dir).version == version


def test_the_follow_command_syncs_once_without_tensorflow(cycle, serving, network):
    version, _ = publish(cycle, network)
    env = {
        **os.environ,
        "MNIST_HITL_HOME": str(serving.home),
        "MLFLOW_TRACKING_URI": cycle.tracking_uri,
        "MNIST_HITL_MODEL_SOURCE": "registry",
    }
    script = (
        "import sys\nfrom mnist_hitl.cli import main\nsys.argv = ['mnist-hitl', 'follow', '--once']\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')), code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert json.loads(done.stdout) == {"model_version": version, "changed": True}, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[] 0"  # no TensorFlow in the follower, exit status 0
    again = run_cli(env, "follow", "--once")
    assert json.loads(again.stdout) == {"model_version": version, "changed": False}

    local = run_cli({**env, "MNIST_HITL_MODEL_SOURCE": "local"}, "follow", "--once", check=False)
    assert local.returncode == 1 and local.stderr.count("\n") == 1 and "MNIST_HITL_MODEL_SOURCE" in local.stderr


def test_the_stack_runs_a_follower_only_in_registry_mode(home):
    assert "follow" not in [service.name for service in services(home, with_prometheus=False)]
    registry = home.replace(model_source="registry", mlflow_tracking_uri="http://user:secret@mlflow:5000")
    stack = services(registry, with_prometheus=False)
    (follower,) = [service for service in stack if service.name == "follow"]
    assert follower.port is None and follower.url == "http://mlflow:5000"  # no password on the terminal
    assert follower not in busy_ports(registry, stack)
    assert stack_environment(registry)["MNIST_HITL_MODEL_SOURCE"] == "registry"


@pytest.mark.slow
def test_a_serving_node_gets_the_champion_through_an_mlflow_server_on_postgresql(
    tmp_path, quick_models, home, network, postgres_url, digit
):
    server = start_mlflow_server(tmp_path / "mlflow-server", postgres_url)
    try:
        server.wait()
        uri = server.url
        cycle = cycle_home(tmp_path / "cycle", quick_models, uri)
        version, mlflow_version = publish(cycle, network)
        registered = tracking.client(cycle).get_model_version(tracking.REGISTERED_MODEL, mlflow_version)
        # The artifacts live behind the server: a serving node reads them through it, not from a disk.
        assert tracking.client(cycle).get_run(registered.run_id).info.artifact_uri.startswith("mlflow-artifacts:")

        serving = home.replace(model_source="registry", mlflow_tracking_uri=uri)
        assert sync_from_registry(serving) == version
        assert Predictor(serving.models_dir).predict(digit)[1] == version
        for kind in ("tflite", "keras"):
            source = cycle.models_dir / f"model_{version}.{kind}"
            assert (serving.models_dir / source.name).read_bytes() == source.read_bytes()
    finally:
        stop(server.process)
