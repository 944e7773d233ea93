"""What several test files share: free ports, IDX files, and running the ``mnist-hitl`` command."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from mnist_hitl.app.command import free_port  # one definition, shared with the package's running_app
from mnist_hitl.config import Settings

REPO = Path(__file__).resolve().parents[2]  # the checkout: notebooks, bench, compose files

__all__ = ["REPO", "ctrl_c", "free_port", "import_digits", "port_is_free", "run_cli", "start_cli", "write_idx"]


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


def _cli(
    settings_or_env: Settings | Mapping[str, str], args: tuple[str, ...], extra_env: Mapping[str, str] | None
) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment of ``mnist-hitl ARGS``, run as a user runs it: the console script."""
    if isinstance(settings_or_env, Settings):
        env = {**os.environ, "MNIST_HITL_HOME": str(settings_or_env.home)}
    else:
        env = dict(settings_or_env)
    env.update(extra_env or {})
    return [str(Path(sys.executable).parent / "mnist-hitl"), *args], env


def run_cli(
    settings_or_env: Settings | Mapping[str, str],
    *args: str,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    in_process: bool = False,
) -> subprocess.CompletedProcess:
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


def start_cli(
    settings_or_env: Settings | Mapping[str, str],
    *args: str,
    extra_env: Mapping[str, str] | None = None,
    **popen_options,
) -> subprocess.Popen:
    """Start ``mnist-hitl ARGS`` (a server, or a command to kill midway) as :func:`run_cli` runs it.

    ``popen_options`` go to :class:`subprocess.Popen` (``stdout``, ``start_new_session``, ...). The
    command starts with SIGINT's default action, as a command typed in a terminal does, whatever this
    process inherited: a test suite started in the background by a script (``cmd &`` without job
    control) ignores SIGINT, every child would inherit that, and Ctrl-C would reach no Python
    program that leaves SIGINT to the interpreter.
    """
    command, env = _cli(settings_or_env, args, extra_env)
    return subprocess.Popen(command, env=env, preexec_fn=_sigint_as_in_a_terminal, **popen_options)


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the interpreter then installs its KeyboardInterrupt


def import_digits(settings: Settings, count: int) -> list[int]:
    """Store ``count`` unlabelled pictures (bundled MNIST holdout digits) as imports; returns their prediction ids."""
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png
    from mnist_hitl.workbench import Workbench

    digits = load_bundled().x_test[:count]
    with Workbench(settings, source="import") as workbench:
        return [workbench.predict_png(encode_png(digit)).prediction_id for digit in digits]


def ctrl_c(process: subprocess.Popen, also: Callable[[], list[int]] = list, timeout: float = 15) -> list[str]:
    """What Ctrl-C in a terminal does (SIGINT to the process group); the processes still alive after ``timeout`` s.

    The process must have been started in a session of its own (:func:`start_cli` gives it SIGINT's
    default action).
    Counted: the process, every descendant it has at the moment of the signal (wherever their own
    process group), and the pids ``also`` returns (those started later); whatever is left is killed
    afterwards and returned as ``"pid name"``.
    """
    import psutil

    def alive(pids: set[int]) -> list[psutil.Process]:
        found = []
        for pid in pids:
            try:
                member = psutil.Process(pid)
                if member.status() != psutil.STATUS_ZOMBIE:
                    found.append(member)
            except psutil.Error:
                continue
        return found

    pids = {process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))}
    os.killpg(process.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pids | set(also())):
        time.sleep(0.2)
    left = alive(pids | set(also()))
    named = []
    for member in left:
        try:
            named.append(f"{member.pid} {' '.join(member.cmdline())[:120]}")
            member.kill()
        except psutil.Error:
            continue
    process.wait(timeout=10)
    return named


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` on the loopback address any more."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
