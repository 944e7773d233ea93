"""A running predictor survives damaged model files: rewritten in place, corrupt, missing, or badly pointed to.

Each test names what a user would see go wrong without the fix: a served app killed by SIGBUS,
every prediction failing, a damaged export silently served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.config import Settings
from mnist_hitl.files import atomic_write
from mnist_hitl.learning.retrain import deployment
from mnist_hitl.learning.retrain.network import SavedModel
from mnist_hitl.model import DEPLOYED_POINTER, Deployed, ModelFileError, Predictor, deployed_model
from mnist_hitl.services.exporter import exporter_registry
from mnist_hitl.store import Store

# A predictor in its own process: predicts once, says "ready", then predicts a batch for each line it is sent,
# checking that it still answers with the model it loaded first.
PREDICTOR_PROCESS = """
import sys
import numpy as np
from mnist_hitl.model import Predictor

predictor = Predictor(sys.argv[1])
digit = np.load(sys.argv[2])
first, version = predictor.predict(digit)
print("ready", flush=True)
for line in sys.stdin:
    for _ in range(20):
        probabilities, used = predictor.predict(digit)
        assert used == version and np.array_equal(probabilities, first), (used, probabilities)
    print("predicted", flush=True)
"""


def _deploy_copy(settings: Settings, source: Deployed, version: str) -> SavedModel:
    """Deploy a copy of a deployed model's files under a new version name."""
    models = settings.models_dir
    saved = SavedModel(version, models / f"model_{version}.keras", models / f"model_{version}.tflite")
    shutil.copyfile(models / f"model_{source.version}.keras", saved.keras_path)
    shutil.copyfile(source.tflite_path, saved.tflite_path)
    with Store(settings.db_path) as store:
        deployment.deploy(settings, store, saved, source.holdout_accuracy, {"reason": "deployed by a test"})
    return saved


def _point_at(models: Path, version: str, export: bytes) -> None:
    """Write an export as ``deploy`` would, its checksum included, bypassing deploy's check that it loads."""
    (models / f"model_{version}.tflite").write_bytes(export)
    atomic_write(
        models / DEPLOYED_POINTER,
        json.dumps(
            {
                "version": version,
                "keras": f"model_{version}.keras",
                "tflite": f"model_{version}.tflite",
                "tflite_sha256": hashlib.sha256(export).hexdigest(),
                "holdout_accuracy": 0.5,
            }
        ).encode(),
    )


def _zero_bytes(path: Path, count: int = 1000) -> None:
    """Zero ``count`` bytes in the middle of a file, in place (same size, same inode)."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(bytes(count))


def _other_input_export(tmp_path: Path) -> bytes:
    """A valid LiteRT model that takes a 14x14 picture instead of 28x28."""
    from mnist_hitl.learning.retrain.network import export_tflite, keras_module

    keras = keras_module()
    network = keras.Sequential(
        [keras.Input((14, 14, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    return export_tflite(network, tmp_path / "other_input.tflite").read_bytes()


def _load_failures(settings: Settings) -> dict[str, float]:
    registry = exporter_registry(settings)
    return {
        sample.labels["reason"]: sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "mnist_hitl_model_load_failures_total"
    }


def _breakage_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "mnist_hitl.model.predictor" and r.levelno >= logging.ERROR
    ]


@pytest.mark.parametrize("damage", ["same-size garbage", "truncation"])
def test_rewriting_the_deployed_export_in_place_does_not_kill_a_running_predictor(
    home_with_model, tmp_path, digit, damage
):
    export = deployed_model(home_with_model.models_dir).tflite_path
    np.save(tmp_path / "digit.npy", digit)
    process = subprocess.Popen(
        [sys.executable, "-c", PREDICTOR_PROCESS, str(home_with_model.models_dir), str(tmp_path / "digit.npy")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
        if damage == "truncation":
            os.truncate(export, 0)
        else:
            with open(export, "r+b") as handle:
                handle.write(np.random.default_rng(0).bytes(export.stat().st_size))
        out, err = process.communicate("predict\npredict\n", timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, f"the predictor exited with {process.returncode}:\n{err[-3000:]}"
    assert out.split() == ["predicted", "predicted"]


@pytest.mark.parametrize(
    "reason", ["missing_export", "checksum_mismatch", "unloadable", "wrong_input_shape", "bad_pointer"]
)
def test_a_broken_new_deployment_leaves_the_running_predictor_serving_its_model(
    home_with_model, tmp_path, digit, caplog, reason
):
    models = home_with_model.models_dir
    good = deployed_model(models)
    predictor = Predictor(models)
    expected, version = predictor.predict(digit)
    broken = "20990101-000000-000"
    if reason == "missing_export":
        _deploy_copy(home_with_model, good, broken).tflite_path.unlink()
    elif reason == "checksum_mismatch":
        _zero_bytes(_deploy_copy(home_with_model, good, broken).tflite_path)
    elif reason == "unloadable":
        _point_at(models, broken, np.random.default_rng(1).bytes(good.tflite_path.stat().st_size))
    elif reason == "wrong_input_shape":
        _point_at(models, broken, _other_input_export(tmp_path))
    else:
        atomic_write(models / DEPLOYED_POINTER, b'{"version": "20990101-000000-000", "tfl')

    for _ in range(3):
        probabilities, used = predictor.predict(digit)
        assert used == version == good.version
        np.testing.assert_array_equal(probabilities, expected)
    assert predictor.version == good.version
    logged = _breakage_logs(caplog)
    assert len(logged) == 1 and f"still serving version {good.version}" in logged[0], logged
    assert _load_failures(home_with_model)[reason] == 1

    fixed = _deploy_copy(home_with_model, good, "20990101-000000-001")
    assert predictor.predict(digit)[1] == fixed.version


def test_a_running_predictor_tries_again_at_each_new_pointer(home_with_model, digit, caplog):
    models = home_with_model.models_dir
    good = deployed_model(models)
    predictor = Predictor(models)
    predictor.predict(digit)
    _zero_bytes(_deploy_copy(home_with_model, good, "20990101-000000-000").tflite_path)
    assert predictor.predict(digit)[1] == good.version
    _deploy_copy(home_with_model, good, "20990101-000000-001").tflite_path.unlink()
    assert predictor.predict(digit)[1] == good.version
    assert len(_breakage_logs(caplog)) == 2
    _deploy_copy(home_with_model, good, "20990101-000000-002")
    assert predictor.predict(digit)[1] == "20990101-000000-002"
    failures = _load_failures(home_with_model)
    assert failures["checksum_mismatch"] == 1 and failures["missing_export"] == 1


def test_an_explicit_reload_reports_a_broken_deployment_and_keeps_the_model(home_with_model, digit):
    models = home_with_model.models_dir
    good = deployed_model(models)
    predictor = Predictor(models)
    predictor.predict(digit)
    _zero_bytes(_deploy_copy(home_with_model, good, "20990101-000000-000").tflite_path)
    with pytest.raises(ModelFileError, match=f"checksum.*still serving version {good.version}"):
        predictor.refresh(force=True)
    assert predictor.predict(digit)[1] == good.version


def test_deploy_records_the_exports_checksum_and_a_damaged_export_is_never_served(home_with_model, digit):
    models = home_with_model.models_dir
    deployed = deployed_model(models)
    pointer = json.loads((models / DEPLOYED_POINTER).read_text())
    assert pointer["tflite_sha256"] == hashlib.sha256(deployed.tflite_path.read_bytes()).hexdigest()
    _zero_bytes(deployed.tflite_path)
    with pytest.raises(ModelFileError, match="checksum"):
        Predictor(models).predict(digit)


def test_a_pointer_from_before_checksums_still_loads_with_a_warning(home_with_model, digit, caplog):
    models = home_with_model.models_dir
    pointer = json.loads((models / DEPLOYED_POINTER).read_text())
    pointer.pop("tflite_sha256", None)
    atomic_write(models / DEPLOYED_POINTER, json.dumps(pointer).encode())
    assert Predictor(models).predict(digit)[1] == pointer["version"]
    assert any("no checksum" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_deploy_refuses_an_export_no_predictor_could_load(home_with_model):
    models = home_with_model.models_dir
    before = (models / DEPLOYED_POINTER).read_bytes()
    version = "20990101-000000-000"
    saved = SavedModel(version, models / f"model_{version}.keras", models / f"model_{version}.tflite")
    shutil.copyfile(deployment.deployed_keras_path(home_with_model), saved.keras_path)
    saved.tflite_path.write_bytes(b"\0" * 4096)
    with pytest.raises(ModelFileError, match="corrupt"), Store(home_with_model.db_path) as store:
        deployment.deploy(home_with_model, store, saved, 0.5, {"reason": "test"})
    assert (models / DEPLOYED_POINTER).read_bytes() == before


def test_the_pointer_is_the_one_source_of_truth(home_with_model):
    """No ``latest.keras``/``latest.tflite`` copies: the pointer names the deployed files, and old copies go."""
    models = home_with_model.models_dir
    deployed = deployed_model(models)
    assert deployment.deployed_keras_path(home_with_model) == models / f"model_{deployed.version}.keras"
    assert not (models / "latest.keras").exists() and not (models / "latest.tflite").exists()
    for stale in ("latest.keras", "latest.tflite"):  # left by an older version of mnist-hitl
        shutil.copyfile(deployed.tflite_path, models / stale)
    with Store(home_with_model.db_path) as store:
        changes = deployment.reconcile(home_with_model, store)
    assert not (models / "latest.keras").exists() and not (models / "latest.tflite").exists()
    assert len(changes) == 2 and all("latest.json" in change for change in changes)


def test_no_deployed_model_at_all_is_a_clear_error(home, digit):
    with pytest.raises(ModelFileError, match="mnist-hitl init"):
        Predictor(home.models_dir).predict(digit)
    with pytest.raises(ModelFileError, match="mnist-hitl init"):
        deployment.deployed_keras_path(home)
