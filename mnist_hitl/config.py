"""Every setting of mnist-hitl, and the one door to the process environment.

All paths derive from one root, ``MNIST_HITL_HOME`` (default ``./var``), so a
single folder holds the store, the models, the MLflow records and everything
else the project writes. :func:`get_settings` reads the environment each time
it is called, so a process (or a test) that changes the environment sees the
change; a bad value stops with :class:`SettingsError`, one line naming the
variable. No other module reads or writes ``os.environ``: what the tools we
drive read from it (Prefect, MLflow, TensorFlow, prometheus_client) is set here
too, from the settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str, *, ge: int | float | None = None, le: int | None = None, default=None, **kwargs):
    """A field read from the environment variable ``name`` (also settable by field name)."""
    return Field(default, validation_alias=name, ge=ge, le=le, **kwargs)


class SettingsError(ValueError):
    """A setting in the environment has a value that cannot be used."""


class Settings(BaseSettings):
    """Resolved settings; build with :func:`get_settings`. Each field names its environment variable."""

    # Fields are read only by their variable's name (case-sensitive), never by the field's
    # own name: ``home`` must not pick up $HOME.
    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="ignore", validate_default=True
    )

    home: Path = _env("MNIST_HITL_HOME", default=Path("var"))
    mnist_source: Literal["bundled", "local", "keras"] = _env("MNIST_HITL_MNIST_SOURCE", default="bundled")
    mnist_path: Path | None = _env("MNIST_HITL_MNIST_PATH")
    holdout_size: int = _env("MNIST_HITL_HOLDOUT", ge=10, default=1000)
    seed: int = _env("MNIST_HITL_SEED", ge=0, default=0)
    train_epochs: int = _env("MNIST_HITL_EPOCHS", ge=1, default=15)
    app_host: str = _env("MNIST_HITL_APP_HOST", default="127.0.0.1")
    app_port: int = _env("MNIST_HITL_APP_PORT", ge=1, le=65535, default=8866)
    max_picture_bytes: int = _env("MNIST_HITL_MAX_PICTURE_BYTES", ge=1, default=20_000_000)
    max_picture_pixels: int = _env("MNIST_HITL_MAX_PICTURE_PIXELS", ge=1, default=40_000_000)
    min_new_labels: int = _env("MIN_NEW_LABELS", ge=0, default=20)
    drift_threshold: float = _env("DRIFT_THRESHOLD", ge=0, default=0.3)
    fail_threshold: int = _env("FAIL_THRESHOLD", ge=1, default=5)
    cycle_minutes: int = _env("MNIST_HITL_CYCLE_MINUTES", ge=1, default=60)
    retrain_every_labels: int = _env("MNIST_HITL_RETRAIN_EVERY_LABELS", ge=1, default=100)
    n_trials: int = _env("MNIST_HITL_TRIALS", ge=1, default=8)
    epochs_per_trial: int = _env("MNIST_HITL_EPOCHS_PER_TRIAL", ge=1, default=1)
    final_epochs: int = _env("MNIST_HITL_FINAL_EPOCHS", ge=1, default=4)
    oversample: int = _env("MNIST_HITL_OVERSAMPLE", ge=1, default=5)
    replay: int = _env("MNIST_HITL_REPLAY", ge=0, default=4000)
    label_share: float = _env("MNIST_HITL_LABEL_SHARE", ge=0, lt=1, default=1 / 3)
    search_every_labels: int = _env("MNIST_HITL_SEARCH_EVERY_LABELS", ge=1, default=500)
    pseudo_confidence: float = _env("MNIST_HITL_PSEUDO_LABEL_CONFIDENCE", ge=0, le=1, default=0.0)
    final_fit: bool = _env("MNIST_HITL_FINAL_FIT", default=True)
    champion_share: float = _env("MNIST_HITL_CHAMPION_SHARE", ge=0, le=1, default=0.3)
    average_folds: bool = _env("MNIST_HITL_AVERAGE_FOLDS", default=False)
    mlflow_tracking_uri: str = _env("MLFLOW_TRACKING_URI", default="")
    prefect_port: int = _env("MNIST_HITL_PREFECT_PORT", ge=1, le=65535, default=4200)
    prefect_api_url: str = _env("PREFECT_API_URL", default="")
    mlflow_port: int = _env("MNIST_HITL_MLFLOW_PORT", ge=1, le=65535, default=5000)
    metrics_port: int = _env("MNIST_HITL_METRICS_PORT", ge=1, le=65535, default=9108)
    prometheus_port: int = _env("MNIST_HITL_PROMETHEUS_PORT", ge=1, le=65535, default=9090)
    notebooks_override: Path | None = _env("MNIST_HITL_NOTEBOOKS")
    lab_port: int = _env("MNIST_HITL_LAB_PORT", ge=1, le=65535, default=8888)
    lab_token: str | None = _env("MNIST_HITL_LAB_TOKEN", min_length=16, repr=False)
    queue_random_share: float = _env("MNIST_HITL_QUEUE_RANDOM_SHARE", ge=0, le=1, default=0.1)
    doubt_confidence: float = _env("MNIST_HITL_DOUBT_CONFIDENCE", ge=0, le=1, default=0.95)
    lease_seconds: float = _env("MNIST_HITL_LEASE_SECONDS", gt=0, le=86400, default=300.0)
    second_opinion_share: float = _env("MNIST_HITL_SECOND_OPINION_SHARE", ge=0, le=1, default=0.1)
    extra_hosts: str = _env("MNIST_HITL_ALLOWED_HOSTS", default="")
    app_max_kernels: int = _env("MNIST_HITL_APP_MAX_KERNELS", ge=1, default=20)
    app_kernel_idle_seconds: int = _env("MNIST_HITL_APP_KERNEL_IDLE_SECONDS", ge=1, default=300)
    app_warm_kernels: int = _env("MNIST_HITL_APP_WARM_KERNELS", ge=0, le=20, default=0)
    api_port: int = _env("MNIST_HITL_API_PORT", ge=1, le=65535, default=8000)
    api_token: str | None = _env("MNIST_HITL_API_TOKEN", min_length=1, repr=False)
    # Named tokens (mnist_hitl.api.tokens): "name:sha256hex,...", and a file of "name sha256hex" lines.
    api_tokens: str = _env("MNIST_HITL_API_TOKENS", default="", repr=False)
    api_tokens_file: Path | None = _env("MNIST_HITL_API_TOKENS_FILE")
    # Beyond one machine (README, "Scaling out"): every default keeps it on one machine.
    database_url: str = _env("MNIST_HITL_DATABASE_URL", default="", repr=False)
    search_workers: int = _env("MNIST_HITL_SEARCH_WORKERS", ge=0, default=0)
    work_pool: str = _env("MNIST_HITL_WORK_POOL", default="")
    model_source: Literal["local", "registry"] = _env("MNIST_HITL_MODEL_SOURCE", default="local")
    registry_poll_seconds: float = _env("MNIST_HITL_REGISTRY_POLL_SECONDS", ge=0.1, default=10.0)
    # Faults (README, "Settings"): how long the store and the servers wait, and how much they take.
    database_connect_timeout: int = _env("MNIST_HITL_DATABASE_CONNECT_TIMEOUT", ge=1, default=10)
    database_statement_timeout: float = _env("MNIST_HITL_DATABASE_STATEMENT_TIMEOUT", gt=0, default=30.0)
    health_timeout: float = _env("MNIST_HITL_HEALTH_TIMEOUT", gt=0, default=2.0)
    server_read_timeout: float = _env("MNIST_HITL_SERVER_READ_TIMEOUT", gt=0, default=30.0)
    server_keep_alive: int = _env("MNIST_HITL_SERVER_KEEP_ALIVE", ge=1, default=5)
    server_max_connections: int = _env("MNIST_HITL_SERVER_MAX_CONNECTIONS", ge=1, default=100)
    server_max_header_bytes: int = _env("MNIST_HITL_SERVER_MAX_HEADER_BYTES", ge=1024, default=65536)
    server_shutdown_timeout: int = _env("MNIST_HITL_SERVER_SHUTDOWN_TIMEOUT", ge=1, default=10)

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("expected sqlite:///<file> or postgresql+psycopg://user@host:port/database")
        return value

    @field_validator("home", "mnist_path", "notebooks_override")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()

    def replace(self, **changes) -> Settings:
        """A copy with some settings changed (by field name), validated like the environment's."""
        return _build({**self.model_dump(), **changes})

    @property
    def notebooks_dir(self) -> Path:
        """The project's notebooks (the app and the learning loop's notebooks)."""
        from mnist_hitl.resources import resource

        return self.notebooks_override or resource("notebooks")

    @property
    def db_path(self) -> Path:
        """The embedded store's SQLite file (used when ``MNIST_HITL_DATABASE_URL`` is not set)."""
        return self.home / "store.sqlite"

    @property
    def store_location(self) -> str | Path:
        """Where the store is: ``MNIST_HITL_DATABASE_URL`` (a PostgreSQL URL, or a SQLite file's), else the
        SQLite file under the home."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///")).expanduser().resolve()
        return self.database_url or self.db_path

    @property
    def shared_database(self) -> bool:
        """Whether the store is a PostgreSQL server that several machines share."""
        return self.database_url.startswith("postgresql")

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
        """The Optuna study's storage: the shared database when there is one, else a SQLite file under the home."""
        return self.database_url if self.shared_database else f"sqlite:///{self.home / 'optuna.sqlite'}"

    @property
    def team_figures_path(self) -> Path:
        """The team's agreement as of the last cycle (JSON), which the metrics exporter serves."""
        return self.home / "team.json"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client multiprocess directory shared by every process."""
        return self.home / "metrics"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def allowed_hosts(self) -> list[str]:
        """The host names the app and the Prefect server answer to (the ``Host`` header, without the port).

        The loopback names, the bind address when it names one host, and ``MNIST_HITL_ALLOWED_HOSTS``
        (comma-separated). A web page reaching a local server through a name of its own (DNS
        rebinding) sends that name, and is refused.
        """
        names = ["localhost", "127.0.0.1"]
        if self.app_host not in ("", "0.0.0.0", "::"):
            names.append(self.app_host)
        names += [name.strip() for name in self.extra_hosts.split(",") if name.strip()]
        return list(dict.fromkeys(names))

    @property
    def prefect_api(self) -> str:
        """The Prefect API: ``PREFECT_API_URL``, else the local server on ``MNIST_HITL_PREFECT_PORT``."""
        return self.prefect_api_url or f"http://127.0.0.1:{self.prefect_port}/api"


def get_settings(**overrides) -> Settings:
    """Read the settings from the environment; ``overrides`` (by field name) win.

    Raises:
        SettingsError: a variable has a value that cannot be used; the message names it.
    """
    return _build({k: v for k, v in overrides.items() if v is not None})


def _build(values: dict) -> Settings:
    unknown = set(values) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}")
    try:
        return Settings(**{_variable(name): value for name, value in values.items()})
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        variable = str(item["loc"][0]) if item["loc"] else "?"
        problems.append(f"{variable}={item.get('input')!r}: {item['msg']}")
    return "bad setting: " + "; ".join(problems)


def _variable(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    return str(alias or field)


def current_home() -> Path:
    """``MNIST_HITL_HOME`` as it is now, cheaply (read on every metric a process records)."""
    return Path(os.environ.get("MNIST_HITL_HOME") or "var").expanduser().resolve()


# the environment of the tools we drive -----------------------------------------------------


def tool_environment(settings: Settings) -> dict[str, str]:
    """What Prefect, MLflow, TensorFlow and Evidently read from the environment, from the settings."""
    return {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # else `mlflow ui` keeps seven job-runner processes
        # The Prefect server: no cross-site requests (CSRF tokens; the Prefect client fetches them itself),
        # cross-origin reads only from its own addresses. The Host check is mnist_hitl.services.prefect_server's.
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": ",".join(
            f"http://{host}:{settings.prefect_port}" for host in settings.allowed_hosts
        ),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DO_NOT_TRACK": "1",
    }


def use_tool_environment(settings: Settings, prefect_server: bool = False) -> None:
    """Set the tools' variables in this process (values already set win).

    Call before importing ``prefect``: it reads its settings once.

    Args:
        settings: where the home folder is.
        prefect_server: also point ``PREFECT_API_URL`` at the configured server; without
            it, a flow run with no API URL uses a temporary local API.
    """
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    for name, value in tool_environment(settings).items():
        os.environ.setdefault(name, value)
    if prefect_server:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api)


def export(name: str, value: str | None, keep_existing: bool = False) -> None:
    """Set (or, with None, remove) one variable for this process and the children it starts.

    Args:
        keep_existing: leave a value that is already set as it is.
    """
    if value is None:
        os.environ.pop(name, None)
    elif keep_existing:
        os.environ.setdefault(name, value)
    else:
        os.environ[name] = value


def child_environment(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a service or child process: this one's, the settings spelled out, the tools' own."""
    env = dict(os.environ)
    # Each mnist-hitl process sets up its own metrics folder from MNIST_HITL_HOME; the
    # other services (Prefect, MLflow) must not write prometheus_client files there.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(tool_environment(settings))
    env.update(
        {
            "MNIST_HITL_HOME": str(settings.home),
            "MNIST_HITL_APP_HOST": settings.app_host,
            "MNIST_HITL_APP_PORT": str(settings.app_port),
            "MNIST_HITL_PREFECT_PORT": str(settings.prefect_port),
            "MNIST_HITL_MLFLOW_PORT": str(settings.mlflow_port),
            "MNIST_HITL_METRICS_PORT": str(settings.metrics_port),
            "MNIST_HITL_PROMETHEUS_PORT": str(settings.prometheus_port),
            "MNIST_HITL_LAB_PORT": str(settings.lab_port),
            "MNIST_HITL_API_PORT": str(settings.api_port),
            **({"MNIST_HITL_DATABASE_URL": settings.database_url} if settings.database_url else {}),
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "PREFECT_API_URL": f"http://{settings.app_host}:{settings.prefect_port}/api",
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
    )
    return env
