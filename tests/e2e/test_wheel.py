"""mnist-hitl installed from its wheel, as a user installs it: the command runs and finds its files.

The wheel goes into a new virtualenv. Its dependencies come from the project's
environment through a ``.pth`` line, so nothing is downloaded; the new
environment's own site-packages comes first, so the wheel's ``mnist_hitl`` is
the one imported, which the tests check. Everything runs from a folder outside
the repository, so no source file can stand in for an installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.support.helpers import REPO

pytestmark = pytest.mark.slow

ROOT = REPO
# What the wheel is built from (the Dockerfile's COPY brings the same).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "mnist_hitl", "notebooks", "flows", "dashboards", "Procfile")

WHERE_THINGS_ARE = """
import json, mnist_hitl
from mnist_hitl.config import get_settings
from mnist_hitl.resources import resource
print(json.dumps({
    "package": mnist_hitl.__file__,
    "drawing app": str(resource("notebooks") / "draw.ipynb"),
    "Procfile": str(resource("Procfile")),
    "learning-cycle flow": str(resource("flows") / "hitl_cycle.py"),
    "Prometheus config": str(resource("dashboards") / "prometheus" / "prometheus.yml"),
    "notebooks_dir": str(get_settings().notebooks_dir),
}))
"""


def _run(command: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A new virtualenv with the wheel installed, and the environment to run its commands in."""
    base = tmp_path_factory.mktemp("wheel")
    # A copy of the sources, so the build leaves no build/ folder in the checkout.
    source = base / "source"
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", base / "dist", source], cwd=base)
    (wheel,) = (base / "dist").glob("mnist_hitl-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    # Installed before the dependencies are linked in, so pip does not see the editable install.
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=base)
    site_packages = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=base).stdout.strip()
    )
    (site_packages / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MNIST_HITL_") and name not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["MNIST_HITL_HOME"] = str(base / "home")
    return {"venv": venv.resolve(), "python": python, "env": env, "cwd": base}


def test_the_installed_command_reports_its_status_without_a_model(installed):
    result = _run([installed["venv"] / "bin" / "mnist-hitl", "status"], cwd=installed["cwd"], env=installed["env"])
    status = json.loads(result.stdout)
    assert status["model_version"] is None, "a fresh home has no model deployed"
    assert "mnist-hitl init" in status["model_error"], "status tells the user how to get a first model"
    assert status["predictions"] == 0 and status["labels"] == 0, "a fresh home has an empty store"
    assert Path(status["home"]) == Path(installed["env"]["MNIST_HITL_HOME"]).resolve(), "the data go to MNIST_HITL_HOME"


def test_the_installed_command_offers_the_learning_cycle(installed):
    result = _run(
        [installed["venv"] / "bin" / "mnist-hitl", "cycle", "--help"], cwd=installed["cwd"], env=installed["env"]
    )
    assert "--force-retrain" in result.stdout


def test_the_installed_package_finds_its_notebooks_flows_dashboards_and_procfile(installed):
    result = _run([installed["python"], "-c", WHERE_THINGS_ARE], cwd=installed["cwd"], env=installed["env"])
    paths = {what: Path(path) for what, path in json.loads(result.stdout).items()}
    assert paths.pop("package").is_relative_to(installed["venv"]), (
        "the wheel's mnist_hitl is imported, not the source checkout's"
    )
    assert paths.pop("notebooks_dir") == paths["drawing app"].parent, "the app serves the installed notebooks"
    for what, path in paths.items():
        assert path.is_file(), f"the installed package cannot find its {what} ({path})"
        assert path.resolve().is_relative_to(installed["venv"] / "share" / "mnist-hitl"), (
            f"the {what} comes from the installation, not the source checkout ({path})"
        )


def test_the_installed_lab_opens_a_working_copy_of_the_notebooks_in_the_home(installed):
    script = (
        "from mnist_hitl.config import get_settings\nfrom mnist_hitl.services.lab import lab_folder\n"
        "print(lab_folder(get_settings()))"
    )
    folder = Path(_run([installed["python"], "-c", script], cwd=installed["cwd"], env=installed["env"]).stdout.strip())
    assert folder == Path(installed["env"]["MNIST_HITL_HOME"]).resolve() / "notebooks", (
        "JupyterLab edits a copy in the home, never the installed notebooks the cycle runs"
    )
    assert {path.name for path in folder.glob("*.ipynb")} >= {
        "draw.ipynb",
        "explore.ipynb",
        "history.ipynb",
        "monitor.ipynb",
        "retrain.ipynb",
    }
