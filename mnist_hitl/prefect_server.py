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

    python -m mnist_hitl.prefect_server [--host 127.0.0.1] [--port 4200]
"""

from __future__ import annotations

import argparse

from mnist_hitl import config
from mnist_hitl.config import Settings, get_settings


def create_app(settings: Settings):
    """Prefect's server app (API, UI and background services) behind a check of the ``Host`` header."""
    from prefect.server.api.server import create_app as prefect_app
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    # Lifespan events pass through the middleware, so the services start and stop with the server.
    return TrustedHostMiddleware(prefect_app(final=True), allowed_hosts=settings.allowed_hosts)


def main(argv: list[str] | None = None) -> None:
    """Serve Prefect until SIGINT or SIGTERM (uvicorn shuts the services down, then exits)."""
    parser = argparse.ArgumentParser(prog="python -m mnist_hitl.prefect_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="the address to bind (default MNIST_HITL_APP_HOST)")
    parser.add_argument("--port", type=int, help="the port (default MNIST_HITL_PREFECT_PORT)")
    args = parser.parse_args(argv)
    settings = get_settings()
    host, port = args.host or settings.app_host, args.port or settings.prefect_port
    settings = settings.replace(prefect_port=port)
    config.use_tool_environment(settings)  # before prefect is imported: it reads its settings once
    # The UI asks the API at the address the server says it has, unless PREFECT_UI_API_URL says otherwise.
    config.export("PREFECT_SERVER_API_HOST", "127.0.0.1" if host in ("", "0.0.0.0") else host, keep_existing=True)
    config.export("PREFECT_SERVER_API_PORT", str(port), keep_existing=True)

    import uvicorn
    from prefect.settings import get_current_settings

    server = get_current_settings().server
    print(
        f"Prefect server: http://{host}:{port}/ (hosts: {', '.join(settings.allowed_hosts)}; "
        f"CSRF protection {'on' if server.api.csrf_protection_enabled else 'OFF'}; "
        f"CORS origins {server.api.cors_allowed_origins})",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        timeout_keep_alive=server.api.keepalive_timeout,
        log_level=server.logging_level.lower(),
    )


if __name__ == "__main__":
    main()
