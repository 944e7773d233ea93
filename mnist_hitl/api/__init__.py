"""The HTTP API (``mnist-hitl api``): FastAPI routes over the workbench (:mod:`.routes`) and their
schemas (:mod:`.schemas`)."""

from mnist_hitl.api.routes import create_app, serve_api

__all__ = ["create_app", "serve_api"]
