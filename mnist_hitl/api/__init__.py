"""The HTTP API (``mnist-hitl api``): the application (:mod:`.server`), its routes by resource
(:mod:`.predictions`, :mod:`.labels`, :mod:`.service`, :mod:`.inference`) and their schemas (:mod:`.schemas`)."""

from mnist_hitl.api.server import create_app, serve_api

__all__ = ["create_app", "serve_api"]
