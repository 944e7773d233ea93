"""What a client may take from the API's server: time to send a request, connections, header bytes.

uvicorn bounds the idle time between two requests of a connection (``timeout_keep_alive``), the
connections and requests at once (``limit_concurrency``: one more gets a 503), the size of a
request's head (h11's ``max_incomplete_event_size``: larger gets a 400) and the wait for requests in
flight at a shutdown (``timeout_graceful_shutdown``). It does not bound the time a client takes to
send its request: one that connects and sends nothing, or its headers a byte at a time, holds a
connection for ever. :class:`ReadTimeoutProtocol`, uvicorn's h11 protocol with one more timer,
closes a connection whose request has not arrived whole (head and body) within
``MNIST_HITL_SERVER_READ_TIMEOUT`` of its connection or of the previous response.
"""

from __future__ import annotations

import asyncio
import functools

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnist_hitl.config import Settings, get_settings


@functools.cache
def _read_timeout() -> float:
    return get_settings().server_read_timeout  # read once per server process (uvicorn starts the workers)


class ReadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request is not whole within the read timeout."""

    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._read_deadline = self.loop.call_later(_read_timeout(), self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        # IDLE: no request head yet (or part of one); SEND_BODY: the body is still coming. A request
        # read whole (DONE) is the application's, however long it takes.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.logger.info("closed a connection: its request did not arrive within %g s", _read_timeout())
            self.transport.close()


def uvicorn_limits(settings: Settings) -> dict:
    """uvicorn's options bounding what clients may take, from the settings (``MNIST_HITL_SERVER_...``)."""
    return {
        "http": ReadTimeoutProtocol,
        "timeout_keep_alive": settings.server_keep_alive,
        "limit_concurrency": settings.server_max_connections,
        "h11_max_incomplete_event_size": settings.server_max_header_bytes,
        "timeout_graceful_shutdown": settings.server_shutdown_timeout,
    }
