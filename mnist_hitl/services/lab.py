"""JupyterLab on the project's notebooks: ``mnist-hitl lab``, a service of the local stack.

Which folder it opens: in a source checkout, the repository's ``notebooks/`` itself
(an edit there is an edit of the project). An installed wheel keeps the notebooks
under ``<prefix>/share/mnist-hitl/notebooks``, which may be read-only and is
replaced by the next install, and the learning cycle runs those copies; there
JupyterLab opens a working copy in ``$MNIST_HITL_HOME/notebooks``, filled with the
installed notebooks it lacks and never overwritten, so a person's edits survive an
upgrade and never change what the cycle runs. ``MNIST_HITL_NOTEBOOKS`` (a folder of
one's own) wins over both.

The server binds ``MNIST_HITL_APP_HOST`` and asks for a token: ``MNIST_HITL_LAB_TOKEN``,
or one generated at start and printed with the address. It reaches the server
through the environment (``JUPYTER_TOKEN``), not the command line, where any local
user could read it. The kernels get the stack's environment, so a notebook left
with ``home=None`` reads the same store, models and MLflow as the services.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.config import Settings
from mnist_hitl.resources import in_checkout, resource

# A kernel whose browser tab is gone and that has been idle this long is shut down:
# a retraining kernel holds TensorFlow (~700 MB) until then.
IDLE_KERNEL_SECONDS = 3600


def with_token(settings: Settings) -> Settings:
    """The settings with a lab token: ``MNIST_HITL_LAB_TOKEN``, or a new random one."""
    return settings if settings.lab_token else settings.replace(lab_token=secrets.token_urlsafe(24))


def lab_folder(settings: Settings) -> Path:
    """The folder JupyterLab opens (see the module's docstring); creates the working copy when needed."""
    if settings.notebooks_override:
        return settings.notebooks_override
    installed = resource("notebooks")
    if in_checkout(installed):
        return installed
    copy = settings.home / "notebooks"
    copy.mkdir(parents=True, exist_ok=True)
    for notebook in sorted(installed.glob("*.ipynb")):
        if not (copy / notebook.name).exists():
            shutil.copyfile(notebook, copy / notebook.name)
    return copy


def lab_url(settings: Settings, port: int | None = None) -> str:
    """The address to open, with the token (on this machine, when the server listens on every address)."""
    host = "127.0.0.1" if settings.app_host in ("", "0.0.0.0", "::") else settings.app_host
    return f"http://{host}:{port or settings.lab_port}/lab?token={settings.lab_token}"


def lab_user_settings(settings: Settings) -> Path:
    """JupyterLab's user settings for this home, ``$MNIST_HITL_HOME/lab/user-settings``.

    The first start answers the news question for the user (no news: JupyterLab would otherwise
    ask on first open whether to fetch it from the internet); a choice made in the UI since is kept.
    """
    folder = settings.home / "lab" / "user-settings"
    news = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    if not news.exists():
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}, indent=2))
    return folder


def lab_command(settings: Settings, folder: Path, port: int | None = None) -> list[str]:
    """The JupyterLab command line: the configured address, no browser, nothing fetched from the internet."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.ip={settings.app_host}",
        f"--ServerApp.port={port or settings.lab_port}",
        "--ServerApp.port_retries=0",  # fail on a busy port rather than serve on another one
        f"--ServerApp.root_dir={folder}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",  # the container runs as root; the token guards the server
        "--LabApp.extension_manager=readonly",  # installs nothing from PyPI
        "--LabApp.news_url=None",
        f"--LabApp.user_settings_dir={lab_user_settings(settings)}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--MappingKernelManager.cull_idle_timeout={IDLE_KERNEL_SECONDS}",
        "--MappingKernelManager.cull_interval=300",
    ]


def lab_environment(settings: Settings) -> dict[str, str]:
    """The server's (and its kernels') environment: the stack's, and the token."""
    return config.child_environment(settings, {"JUPYTER_TOKEN": settings.lab_token or ""})
