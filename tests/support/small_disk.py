"""A small disk that really fills up: a tmpfs of a few MB, mounted for one shell script in a mount namespace of its own.

``unshare --user --map-root-user --mount`` gives the script its own mount table, where it may mount a
tmpfs whether or not the tests run as root, and the tmpfs goes away with the script. What the script
writes outside the tmpfs (the test's temporary folder) the test reads as usual; what is on the tmpfs,
it reads through the commands the script runs. A kernel that refuses the namespace fails the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "mnist-hitl")

# Run first by every script: the tmpfs at $DISK, a home on it holding the deployed model from $MODELS.
PREAMBLE = """
set -e
mount -t tmpfs -o size={size_kib}k tmpfs "$DISK" || exit 97
export MNIST_HITL_HOME="$DISK/home"
mkdir -p "$MNIST_HITL_HOME/models"
cp "$MODELS/latest.json" "$MODELS"/*.tflite "$MNIST_HITL_HOME/models/"
fill_the_disk() {{ dd if=/dev/zero of="$DISK/fill" bs=4k 2>/dev/null || true; }}
"""


def start_on_small_disk(
    script: str, models: Path, folder: Path, env: Mapping[str, str], size_kib: int = 4096, **popen_options
) -> subprocess.Popen:
    """Start ``script`` (sh) with a tmpfs of ``size_kib`` at ``$DISK`` holding ``$MNIST_HITL_HOME``.

    Args:
        models: a models folder with a deployed model, copied into the home (the export and the pointer).
        folder: where ``$DISK`` is made (its mount point; empty, outside the tmpfs it stays so).
        env: the script's environment; ``DISK``, ``MODELS`` and ``CLI`` (the ``mnist-hitl`` command) are added.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare is not installed: apt-get install -y util-linux")
    disk = folder / "disk"
    disk.mkdir()
    environment = {**env, "DISK": str(disk), "MODELS": str(models), "CLI": CLI}
    environment.pop("MNIST_HITL_DATABASE_URL", None)
    command = [unshare, "--user", "--map-root-user", "--mount", "sh", "-c", PREAMBLE.format(size_kib=size_kib) + script]
    return subprocess.Popen(command, env=environment, **popen_options)


def check_mounted(process: subprocess.Popen, output: str = "") -> None:
    """Fail the test, saying why, if the script could not mount its tmpfs."""
    if process.poll() == 97 or "unshare:" in output:
        pytest.fail(f"cannot mount a tmpfs in a namespace of its own (unshare --user --mount): {output[-500:]}")


def wait_for_file(path: Path, process: subprocess.Popen, within: float = 60) -> None:
    """Wait until the script creates ``path`` (a signal), failing if it exits first or never does."""
    deadline = time.monotonic() + within
    while not path.exists():
        check_mounted(process)
        assert process.poll() is None, f"the script exited with {process.returncode} before {path.name}"
        assert time.monotonic() < deadline, f"the script never got to {path.name}"
        time.sleep(0.05)
