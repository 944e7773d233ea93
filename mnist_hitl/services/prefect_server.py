"""The Prefect server of the local stack: Prefect's own app, answering only to the names it is known by.

A Prefect server has no login unless ``PREFECT_SERVER_API_AUTH_STRING`` is set, and
``prefect server start`` checks no ``Host`` header, so any web page a user opens could
drive it through DNS rebinding (a name of the page's own that resolves to 127.0.0.1).
This module serves the same app, ``prefect.server.api.server.create_app``, the way
``prefect server start`` does in the foreground (uvicorn, one worker, the background
services such as the scheduler running in the app's lifespan), wrapped in Starlette's
``TrustedHostMiddleware``: a request whose ``Host`` is not one of
:attr:`mnist_hitl.config.Settings.allowed_hosts` gets a 400 before Prefect sees it.
CSRF protection and the CORS origins are Prefect's own settings, set from ours in
:func:`mnist_hitl.config.tool_environment`.

    mnist-hitl prefect-server [--host 127.0.0.1] [--port 4200]

Its database is Prefect's own setting: SQLite under ``$PREFECT_HOME`` unless
``PREFECT_API_DATABASE_CONNECTION_URL`` names another, as when one server serves the
schedulers and workers of several machines (``postgresql+asyncpg://...``, a database of
its own: Prefect and MLflow both keep an ``alembic_version`` table). :func:`worker_command`
is the other end: a Prefect worker on ``MNIST_HITL_WORK_POOL`` (``mnist-hitl worker``).
"""

from __future__ import annotations

import socket
import sys

from mnist_hitl import config
from mnist_hitl.config import Settings


def create_app(settings: Settings):
    """Prefect's server app (API, UI and background services) behind a check of the ``Host`` header."""
    from prefect.server.api.server import create_app as prefect_app
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    # Lifespan events pass through the middleware, so the services start and stop with the server.
    return TrustedHostMiddleware(prefect_app(final=True), allowed_hosts=settings.allowed_hosts)


def worker_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a Prefect process worker on ``MNIST_HITL_WORK_POOL``.

    It polls the pool and runs each flow run in a process of its own, one at a time (a cycle
    trains, and TensorFlow costs hundreds of megabytes); the worker itself imports only Prefect.
    It creates the pool if the scheduler has not yet. Named after the host, so the Prefect UI
    says which machine ran a cycle.

    Raises:
        ValueError: no work pool is set.
    """
    if not settings.work_pool:
        raise ValueError("no work pool: set MNIST_HITL_WORK_POOL (the pool `mnist-hitl schedule` deploys the cycle to)")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", settings.work_pool, "--type", "process"]
    command += ["--name", f"mnist-hitl {socket.gethostname()}", "--limit", "1", "--install-policy", "never"]
    return command, config.child_environment(settings, {"PREFECT_API_URL": settings.prefect_api})


def serve_prefect(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve Prefect until SIGINT or SIGTERM (uvicorn shuts the services down, then exits).

    Args:
        settings: the names to answer to; Prefect's own settings come from them (:func:`config.tool_environment`).
        host: the address to bind; defaults to ``MNIST_HITL_APP_HOST``.
        port: defaults to ``MNIST_HITL_PREFECT_PORT`` (4200).
    """
    host, port = host or settings.app_host, port or settings.prefect_port
    settings = settings.replace(prefect_port=port)
    config.use_tool_environment(settings)  # before prefect is imported: it reads its settings once
    # The UI asks the API at the address the server says it has, unless PREFECT_UI_API_URL says otherwise.
    config.export("PREFECT_SERVER_API_HOST", "127.0.0.1" if host in ("", "0.0.0.0") else host, keep_existing=True)
    config.export("PREFECT_SERVER_API_PORT", str(port), keep_existing=True)

    import uvicorn
    from prefect.settings import get_current_settings

    server = get_current_settings().server
    print(f"Prefect server: http://{host}:{port}/ ({_defences(settings, server)})", flush=True)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        timeout_keep_alive=server.api.keepalive_timeout,
        log_level=server.logging_level.lower(),
    )


def _defences(settings: Settings, server) -> str:
    """What the server answers to and where it keeps its records, for its first line of output."""
    from sqlalchemy.engine import make_url

    url = server.database.connection_url  # may be None when PREFECT_SERVER_DATABASE_HOST & co. describe it
    database = make_url(url.get_secret_value()).render_as_string(hide_password=True) if url else server.database.driver
    return (
        f"hosts: {', '.join(settings.allowed_hosts)}; "
        f"CSRF protection {'on' if server.api.csrf_protection_enabled else 'OFF'}; "
        f"CORS origins {server.api.cors_allowed_origins}; database {database}"
    )
