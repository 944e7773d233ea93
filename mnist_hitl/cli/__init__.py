"""The ``mnist-hitl`` command, every process's entry point (``pyproject.toml``: ``mnist_hitl.cli:main``).

One module per family of commands, all thin wrappers over the library: a person's work
(:mod:`.workbench`), the learning loop (:mod:`.learning`), the servers and the local stack
(:mod:`.serving`); the app holding them in :mod:`.main`, how they fail in :mod:`.errors`.
"""

from mnist_hitl.cli.main import app, main

__all__ = ["app", "main"]
