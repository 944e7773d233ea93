"""What every tier shares: a fresh home folder per test, the models trained once per session, a PostgreSQL server.

Each test is marked with its tier, the folder it is in (``unit``, ``integration``, ``e2e``), and a
test that uses a trained model, directly or through another fixture, is marked ``model``; ``make
test-fast`` runs the unit tier, which trains nothing. The tiers' own fixtures are in their conftest.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mnist_hitl.config import Settings, get_settings

# Epochs of the session's model: the default training, so behaviour tests judge the real thing.
SESSION_EPOCHS = int(os.environ.get("MNIST_HITL_TEST_EPOCHS", "15"))
QUICK_EPOCHS = 2
# The fixtures that train: every test that uses one, however indirectly, gets the `model` marker.
TRAINING_FIXTURES = {"trained_models", "quick_models"}
TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "e2e")  # the folders, declared as markers in pyproject.toml


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else None
        if tier in TIERS:
            item.add_marker(tier)
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


@pytest.fixture
def require_binary() -> Callable[[str, str], str]:
    """Find a Debian-packaged tool the test needs; the test fails (never skips) when it is missing."""

    def find(name: str, package: str) -> str:
        path = shutil.which(name)
        if path is None:
            pytest.fail(f"{name} is not installed: apt-get install -y {package} (as .ci/run does)")
        return path

    return find


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (Debian's package, started here); fails if it is not installed."""
    from bench.support import Postgres  # the benchmarks' server: one implementation for both

    try:
        server = Postgres().start()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres) -> str:
    """The URL of an empty PostgreSQL database of this test's own."""
    return postgres.new_database()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """An empty MNIST_HITL_HOME for one test."""
    monkeypatch.setenv("MNIST_HITL_HOME", str(tmp_path / "home"))
    for name in ("MNIST_HITL_MNIST_SOURCE", "MNIST_HITL_MNIST_PATH", "MLFLOW_TRACKING_URI", "MNIST_HITL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return get_settings()


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with one deployed model, trained once per test session."""
    from mnist_hitl.learning.retrain.training import train_first_model

    session_home = tmp_path_factory.mktemp("session-home")
    settings = get_settings().replace(home=session_home)
    # Its MLflow record (about 5 s) is never read: the tests copy the models folder alone.
    train_first_model(settings, epochs=SESSION_EPOCHS, progress=False, record_run=False)
    return session_home / "models"


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with a model trained for two epochs (about 97% on the MNIST holdout), once per session.

    A challenger fine-tuned from it for two more epochs is reliably no worse on MNIST, so the
    learning loop's end-to-end tests judge the loop rather than the noise of a 1,000-digit
    holdout around a fully trained champion. Its home keeps the MLflow run and registered
    version ``init`` records (tests/integration/learning/test_lineage.py reads them).
    """
    from mnist_hitl.learning.retrain.training import train_first_model

    quick_home = tmp_path_factory.mktemp("quick-home")
    train_first_model(get_settings().replace(home=quick_home), epochs=QUICK_EPOCHS, progress=False)
    return quick_home / "models"


@pytest.fixture
def home_with_model(home: Settings, trained_models: Path) -> Settings:
    """A fresh home whose models folder holds the session's deployed model."""
    shutil.copytree(trained_models, home.models_dir)
    return home


@pytest.fixture
def redeploy() -> Callable[[Path, str], str]:
    """Deploy the deployed model's files again under a new version name (a new deployment, no training)."""

    def deploy_copy_as_new_version(models_dir: Path, version: str) -> str:
        from mnist_hitl.learning.retrain.deployment import deploy
        from mnist_hitl.learning.retrain.network import SavedModel
        from mnist_hitl.store import open_store

        info = json.loads((models_dir / "latest.json").read_text())
        keras_path, tflite_path = models_dir / f"model_{version}.keras", models_dir / f"model_{version}.tflite"
        shutil.copyfile(models_dir / info["keras"], keras_path)
        shutil.copyfile(models_dir / info["tflite"], tflite_path)
        settings = get_settings(home=models_dir.parent)
        with open_store(settings) as store:
            saved = SavedModel(version, keras_path, tflite_path)
            deploy(settings, store, saved, info.get("holdout_accuracy"), {"reason": "redeployed by a test"})
        return version

    return deploy_copy_as_new_version
