"""What several test files share: free ports, IDX files, and running the ``mnist-hitl`` command."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.serve import free_port  # one definition, shared with the package's running_app

__all__ = ["free_port", "run_cli", "start_cli", "write_idx"]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz)."""
    array = np.ascontiguousarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    if array.dtype not in codes:
        raise ValueError(f"write_idx supports uint8 and int8, not {array.dtype}")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())


def _cli(settings_or_env: Settings | Mapping[str, str], args: tuple[str, ...],
         extra_env: Mapping[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment of ``mnist-hitl ARGS``, run as a user runs it: the console script."""
    if isinstance(settings_or_env, Settings):
        env = {**os.environ, "MNIST_HITL_HOME": str(settings_or_env.home)}
    else:
        env = dict(settings_or_env)
    env.update(extra_env or {})
    return [str(Path(sys.executable).parent / "mnist-hitl"), *args], env


def run_cli(settings_or_env: Settings | Mapping[str, str], *args: str, extra_env: Mapping[str, str] | None = None,
            timeout: float = 600, check: bool = True, in_process: bool = False) -> subprocess.CompletedProcess:
    """Run ``mnist-hitl ARGS`` to its end and capture its output as text.

    Args:
        settings_or_env: the home to run on (this process's environment, ``MNIST_HITL_HOME`` set to
            it), or the whole environment of the command.
        extra_env: variables to set on top.
        timeout: seconds before the command is killed and the test fails (not in process).
        check: fail the test, showing the command's stderr, when it exits with a non-zero status.
        in_process: run the command group in this process (typer's CliRunner), for tests that make
            many quick calls; an exception other than an exit fails the test, as a traceback would.
    """
    command, env = _cli(settings_or_env, args, extra_env)
    if in_process:
        result = _run_in_process(args, env)
    else:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"mnist-hitl {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-5000:]}")
    return result


def _run_in_process(args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    from mnist_hitl.cli import app

    outcome = CliRunner().invoke(app, list(args), env=env)
    if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
        raise outcome.exception
    return subprocess.CompletedProcess(["mnist-hitl", *args], outcome.exit_code, outcome.stdout, outcome.stderr)


def start_cli(settings_or_env: Settings | Mapping[str, str], *args: str, extra_env: Mapping[str, str] | None = None,
              **popen_options) -> subprocess.Popen:
    """Start ``mnist-hitl ARGS`` (a server, or a command to kill midway) as :func:`run_cli` runs it.

    ``popen_options`` go to :class:`subprocess.Popen` (``stdout``, ``start_new_session``, ...).
    """
    command, env = _cli(settings_or_env, args, extra_env)
    return subprocess.Popen(command, env=env, **popen_options)
