"""The drawing app's Voila server: HTTP metrics, a Host check and a cap on the pages holding a kernel.

Imported only by the server process (:func:`mnist_hitl.app.command.main`), which it configures
through two traitlets, ``--VoilaWithMetrics.allowed_hosts`` and ``--VoilaWithMetrics.max_kernels``.

The Host check uses Tornado's own routing: every handler Voila has is registered for a
host pattern made of the allowed names, and any other ``Host`` falls through to one
handler that answers 400. jupyter_server's ``allow_remote_access`` check would do for
names, but it lets every loopback address through and refuses every other address, even
the one the app binds when that is not loopback; and it misses Voila's static files.

The cap counts kernels held by pages: the kernel manager's kernels minus the ones waiting
in Voila's preheated pool (read from its ``_pools``: Voila has no public view of them;
should that change, the pool's kernels count as held and the cap only bites earlier), plus
page loads that have been admitted and are still taking their kernel. A page load is
admitted or refused before its first ``await``, and counted until its kernel is in the
kernel manager, so concurrent loads cannot overshoot. A page load takes a pooled kernel
that may have waited longer than the idle timeout: the pooled kernels' activity is
refreshed first, or the culler could shut the page's kernel down before the browser connects.

A client gets ``MNIST_HITL_SERVER_READ_TIMEOUT`` to send a request's head (after connecting, or
after the previous answer) and as long for its body, and ``MNIST_HITL_SERVER_MAX_HEADER_BYTES``
of headers (Tornado's own server options, which Voila leaves at an hour and 64 KiB); an open
kernel socket is not a request, and stays.
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import tornado.web
from jupyter_server.base.handlers import PrometheusMetricsHandler
from jupyter_server.utils import url_path_join
from traitlets import Integer, Unicode
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from mnist_hitl.config import get_settings

BUSY_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>The drawing app is busy</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto; line-height: 1.5">
<h1 class="hitl-busy">The drawing app is busy</h1>
<p>It serves {limit} pages at once, and {limit} are open now. Please try again in a few minutes:
a closed page frees its place at once, a page nobody is connected to after {idle}.</p>
</body></html>
"""


@dataclass
class KernelCap:
    """How many pages may hold a kernel at once, and the page loads taking one right now."""

    limit: int  # 0: no limit
    idle_seconds: int
    taking: int = 0

    def held(self, kernel_manager) -> int:
        """Kernels held by pages, counting the page loads still taking theirs."""
        pooled = set(pooled_kernels(kernel_manager))
        return sum(1 for kernel_id in kernel_manager.list_kernel_ids() if kernel_id not in pooled) + self.taking

    def full(self, kernel_manager) -> bool:
        return bool(self.limit) and self.held(kernel_manager) >= self.limit

    def busy_page(self) -> str:
        minutes, seconds = divmod(self.idle_seconds, 60)
        idle = f"{minutes} min" if minutes and not seconds else f"{self.idle_seconds} s"
        return BUSY_PAGE.format(limit=self.limit, idle=html.escape(idle))


def pooled_kernels(kernel_manager) -> list[str]:
    """The kernels waiting in Voila's preheated pool (started, not yet handed to a page)."""
    found = []
    for pool in getattr(kernel_manager, "_pools", {}).values():
        for task in pool:
            if task.done() and not task.cancelled() and task.exception() is None:
                found.append(task.result()["kernel_id"])
    return found


def keep_pool_fresh(kernel_manager) -> None:
    """Mark the pooled kernels active now: the one a page takes starts its idle time from its handing out."""
    now = datetime.now(UTC)
    for kernel_id in pooled_kernels(kernel_manager):
        if kernel_id in kernel_manager:
            kernel_manager.get_kernel(kernel_id).last_activity = now


class CappedVoilaHandler(TornadoVoilaHandler):
    """Voila's page handler, refusing a page load with a short page while the cap is reached."""

    def initialize(self, cap: KernelCap, **kwargs) -> None:
        super().initialize(**kwargs)
        self.cap = cap

    @tornado.web.authenticated
    async def get(self, path=None):
        if not path and self.cap.full(self.kernel_manager):  # a path is a file: no kernel
            self.log.warning("refused a page load: %d pages hold a kernel (MNIST_HITL_APP_MAX_KERNELS)", self.cap.limit)
            self.set_status(503)
            self.set_header("Retry-After", "60")
            self.set_header("Cache-Control", "no-store")
            self.finish(self.cap.busy_page())
            return
        if not path:
            keep_pool_fresh(self.kernel_manager)
        self.cap.taking += 1
        taking = True
        try:
            # Voila's generator yields nothing before the page's kernel is in the kernel manager.
            async for page in self.get_generator(path=path):
                if taking:
                    self.cap.taking, taking = self.cap.taking - 1, False
                self.write(page)
                self.flush()
        finally:
            if taking:
                self.cap.taking -= 1


class WrongHostHandler(tornado.web.RequestHandler):
    """What a request naming another host gets."""

    def prepare(self) -> None:
        self.set_status(400)
        self.finish("Invalid host header")


class VoilaWithMetrics(Voila):
    """Voila with ``/metrics``, answering only to the allowed host names, with a cap on kernel-holding pages."""

    allowed_hosts = Unicode(
        "localhost,127.0.0.1",
        config=True,
        help="comma-separated host names (Host header, without the port) to answer to",
    )
    max_kernels = Integer(0, config=True, help="pages that may hold a kernel at once (0: no limit)")

    def listen(self) -> None:
        # Voila makes Tornado's server by ``self.app.listen(port, ip)``: the same call, with the limits.
        settings = get_settings()
        self.app.listen = functools.partial(
            self.app.listen,
            idle_connection_timeout=settings.server_read_timeout,
            body_timeout=settings.server_read_timeout,
            max_header_size=settings.server_max_header_bytes,
        )
        super().listen()

    def init_handlers(self) -> list:
        cap = KernelCap(self.max_kernels, self.kernel_manager.cull_idle_timeout)
        handlers = [(url_path_join(self.server_url, "/metrics"), PrometheusMetricsHandler)]
        for pattern, handler, *options in super().init_handlers():
            if handler is TornadoVoilaHandler:
                handler, options = CappedVoilaHandler, [{**options[0], "cap": cap}]
            handlers.append((pattern, handler, *options))
        # Voila adds what this returns for any host, after the handlers registered here (Tornado tries
        # host patterns in the order they were added).
        names = [name.strip().lower() for name in self.allowed_hosts.split(",") if name.strip()]
        self.app.add_handlers("^(" + "|".join(re.escape(name) for name in names) + ")$", handlers)
        return [(r".*", WrongHostHandler)]
