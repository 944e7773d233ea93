"""Benchmark: memory of the idle local stack, service by service (PSS).

Starts ``mnist-hitl run`` as a user does, in a temporary home on free loopback
ports, waits until every service answers and the stack has gone quiet, then
prints each service's proportional set size (PSS: shared pages split between
the processes that share them, so the figures add up), summed over the service's
whole process tree, and the total. The supervisor row is ``mnist-hitl run``
itself (honcho), without its services. Stops the stack with SIGINT to its
process group, as Ctrl-C does. Prints figures; asserts nothing.

By default the temporary home has no model, so the supervisor trains the first
one (one epoch: the memory left behind does not depend on the epochs), as a
first ``make run`` does; ``--models DIR`` copies a deployed model instead (a
restart).

    .venv/bin/python bench/stack_memory.py [--models var/models] [--settle 20] [--json out.json] [--keep]

``--keep`` leaves the temporary home in place (the terminal's output in ``run.log``, the services'
logs in ``logs/``) and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from support import temporary_home

from mnist_hitl.app.command import free_port

# What answers when each service is up; the app's static file, since a page load would take a kernel (held for
# MNIST_HITL_APP_KERNEL_IDLE_SECONDS) that an idle stack does not have.
HEALTH = {
    "app": "/voila/static/favicon.ico",
    "prefect": "/api/health",
    "mlflow": "/health",
    "metrics": "/metrics",
    "prometheus": "/-/ready",
}
STARTED = re.compile(r"^\d\d:\d\d:\d\d (\w+) +started \(pid (\d+)\)", re.M)  # the console's event lines


def port_variables() -> dict[str, str]:
    """Every port setting's variable, by the service's name (``app_port`` is ``MNIST_HITL_APP_PORT``)."""
    from mnist_hitl.config import Settings

    return {
        name.removesuffix("_port"): str(field.validation_alias)
        for name, field in Settings.model_fields.items()
        if name.endswith("_port")
    }


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def pss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            continue
    return total / 2**20


def loaded_libraries(process: psutil.Process, needle: str) -> bool:
    try:
        return any(needle in region.path for region in process.memory_maps(grouped=True))
    except psutil.Error:
        return False


def wait_until_quiet(pid: int, settle: float, timeout: float = 300.0) -> float:
    """Wait ``settle`` seconds, then until the whole stack uses under 10% of one core for 5 s; the seconds waited."""
    started = time.monotonic()
    time.sleep(settle)
    while time.monotonic() - started < timeout:
        processes = tree(pid)
        for process in processes:
            try:
                process.cpu_percent(None)
            except psutil.Error:
                pass
        time.sleep(5)
        busy = 0.0
        for process in processes:
            try:
                busy += process.cpu_percent(None)
            except psutil.Error:
                pass
        if busy < 10.0:
            break
    return time.monotonic() - started


def prepare_home(models: Path | None) -> Path:
    home = temporary_home("mnist-hitl-bench-stack-")
    if models is not None:
        shutil.copytree(models, home / "models")
        print(f"model: copied from {models} (a restart)")
    else:
        print("model: none, the supervisor trains the first one (a first start)")
    return home


def measure(run: subprocess.Popen, log_path: Path) -> dict:
    """PSS and process count of each service's tree; the supervisor is what is left (honcho and its helpers)."""
    everything = tree(run.pid)
    rows, processes, counted = {}, {}, set()
    for name, pid in STARTED.findall(log_path.read_text()):
        members = tree(int(pid))
        rows[name], processes[name] = pss_mb(members), len(members)
        counted |= {member.pid for member in members}
    supervisor = [process for process in everything if process.pid not in counted]
    rows = {"supervisor (mnist-hitl run)": pss_mb(supervisor), **rows}
    processes = {"supervisor (mnist-hitl run)": len(supervisor), **processes}
    huey = sum(1 for p in everything if "huey" in " ".join(_cmdline(p)))
    return {
        "pss_mb": rows,
        "processes": processes,
        "total_pss_mb": pss_mb(everything),
        "total_processes": len(everything),
        "huey_consumers": huey,
        "supervisor_has_tensorflow": loaded_libraries(psutil.Process(run.pid), "libtensorflow"),
    }


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def stop(run: subprocess.Popen) -> float:
    """SIGINT to the stack's process group, as Ctrl-C does; seconds until the stack's every process is gone."""
    members = tree(run.pid)
    started = time.monotonic()
    os.killpg(run.pid, signal.SIGINT)
    while time.monotonic() - started < 60 and any(_alive(p) for p in members):
        time.sleep(0.2)
    seconds = time.monotonic() - started
    for process in members:
        if _alive(process):
            process.kill()
    run.wait(timeout=10)
    return seconds


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="a models folder to copy (default: the supervisor trains one)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds to wait after every service answers")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (its logs) and print its path")
    args = parser.parse_args()

    home = prepare_home(args.models)
    variables = port_variables()
    ports = {name: free_port() for name in variables}
    env = {
        **os.environ,
        "MNIST_HITL_HOME": str(home),
        "MNIST_HITL_EPOCHS": "1",
        "PYTHONUNBUFFERED": "1",
        **{variable: str(ports[name]) for name, variable in variables.items()},
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    services = [name for name in HEALTH if name != "prometheus" or shutil.which("prometheus")]
    log_path = home / "run.log"
    command = [str(Path(sys.executable).parent / "mnist-hitl"), "run"]
    started = time.monotonic()
    with open(log_path, "w") as log:
        run = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        waiting = set(services)
        while waiting and run.poll() is None and time.monotonic() - started < 600:
            waiting = {name for name in waiting if not answers(f"http://127.0.0.1:{ports[name]}{HEALTH[name]}")}
            time.sleep(1)
        if waiting or run.poll() is not None:
            raise SystemExit(f"the stack did not come up ({sorted(waiting)}):\n{log_path.read_text()[-3000:]}")
        up = time.monotonic() - started
        quiet = wait_until_quiet(run.pid, args.settle)
        figures = measure(run, log_path)
        figures.update(
            {
                "seconds_to_answer": round(up, 1),
                "seconds_waited_for_quiet": round(quiet, 1),
                "first_start": args.models is None,
            }
        )
    finally:
        figures_stop = stop(run)
    figures["seconds_to_stop_on_sigint"] = round(figures_stop, 1)
    figures["killed_by_honcho"] = re.findall(r"(\w+) +did not stop within", log_path.read_text())

    width = max(len(name) for name in figures["pss_mb"])
    print(
        f"idle stack, {figures['seconds_waited_for_quiet']:.0f} s after every service answered "
        f"({figures['seconds_to_answer']:.0f} s from start):"
    )
    for name, mb in figures["pss_mb"].items():
        print(f"  {name:<{width}}  {mb:7.0f} MB PSS  ({figures['processes'][name]} processes)")
    print(
        f"  {'total':<{width}}  {figures['total_pss_mb']:7.0f} MB PSS  ({figures['total_processes']} processes)"
        "   goal: under 1,000 MB"
    )
    print(
        f"huey consumers: {figures['huey_consumers']}; TensorFlow in the supervisor: "
        f"{'yes' if figures['supervisor_has_tensorflow'] else 'no'}; "
        f"Ctrl-C to every process gone: {figures['seconds_to_stop_on_sigint']:.1f} s"
        + (f" (honcho killed {', '.join(figures['killed_by_honcho'])})" if figures["killed_by_honcho"] else "")
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.keep:
        print(f"kept {home} (the terminal's output: {log_path})")
    else:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
