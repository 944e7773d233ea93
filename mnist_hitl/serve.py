"""How the drawing app is served: the Voila command line."""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_hitl.config import Settings


def voila_command(settings: Settings, port: int | None = None, pool_size: int = 2) -> list[str]:
    """The command that serves ``notebooks/draw.ipynb`` with Voila on the configured address.

    Kernels are preheated (a pool per notebook), so a page load finds a kernel that
    has already imported the app and loaded the model.
    """
    notebook = Path(settings.notebooks_dir) / "draw.ipynb"
    return [
        sys.executable, "-m", "voila", str(notebook),
        f"--port={port or settings.app_port}",
        f"--Voila.ip={settings.app_host}",
        "--no-browser",
        "--preheat_kernel=True",
        f"--pool_size={pool_size}",
        "--show_tracebacks=True",
        f"--Voila.root_dir={notebook.parent}",
    ]
