"""The API's guard against the web pages a browser opens: the app's Host allow-list, and no writes from another site.

Binding 127.0.0.1 keeps other machines out, not the pages the browser on this machine opens.
Such a page can reach the API through a name of its own that resolves to 127.0.0.1 (DNS
rebinding), and then read what it answers: its requests carry that name as their ``Host``, and
get a 400 (Starlette's ``TrustedHostMiddleware`` on :attr:`mnist_hitl.config.Settings.allowed_hosts`,
the names the app and the Prefect server answer to). A page can also send a form to 127.0.0.1
directly (a multipart POST needs no preflight), blind but stored: the browser says where the
request comes from (``Origin``, ``Sec-Fetch-Site``), and a write from another site is refused
with a 403 before its body is read. A client that is not a browser (curl, ``requests``, an
inference client) sends neither header and is served as before: the token
(``MNIST_HITL_API_TOKEN``) stays optional.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mnist_hitl.config import Settings

READING = frozenset({"GET", "HEAD", "OPTIONS"})


class SameSiteWrites:
    """Refuses (403) a write the browser says comes from another site: an ``Origin`` of a host not allowed,
    or ``Sec-Fetch-Site: cross-site``. Reading, and clients that send neither header, pass."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = {name.lower() for name in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in READING:
            reason = self.refusal(Headers(scope=scope))
            if reason is not None:
                key = "error" if scope["path"].startswith("/v2") else "detail"  # the inference protocol's form
                return await JSONResponse({key: reason}, status_code=403)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers) -> str | None:
        """Why the browser's own headers show a write from another site, or None."""
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return "a write from another site (Sec-Fetch-Site: cross-site) is refused"
        origin = headers.get("origin")
        if origin is None:
            return None
        try:
            host = urlsplit(origin.strip()).hostname
        except ValueError:
            host = None
        if host not in self.allowed_hosts:
            return f"a write from another site (Origin: {origin[:100]}) is refused"
        return None


def guard(app: FastAPI, settings: Settings) -> None:
    """Answer only the allowed host names (400 otherwise), and refuse writes from other sites (403)."""
    app.add_middleware(SameSiteWrites, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)  # outermost: checked first
