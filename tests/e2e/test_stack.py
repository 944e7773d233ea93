"""`mnist-hitl run`: every service answers on its port, Ctrl-C stops them all, a restart keeps the data."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnist_hitl.model import deployed_model
from mnist_hitl.resources import resource
from mnist_hitl.store import Store
from tests.support.helpers import ctrl_c, free_port, port_is_free, start_cli

PORT_VARIABLES = {
    "app": "MNIST_HITL_APP_PORT",
    "api": "MNIST_HITL_API_PORT",
    "prefect": "MNIST_HITL_PREFECT_PORT",
    "mlflow": "MNIST_HITL_MLFLOW_PORT",
    "lab": "MNIST_HITL_LAB_PORT",
    "metrics": "MNIST_HITL_METRICS_PORT",
    "prometheus": "MNIST_HITL_PROMETHEUS_PORT",
}
# What answers when each service is up.
HEALTH = {
    "app": "/",
    "api": "/health/ready",
    "prefect": "/api/health",
    "mlflow": "/health",
    "lab": "/api",
    "metrics": "/metrics",
    "prometheus": "/-/ready",
}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def processes_of(home: Path) -> list[int]:
    """Processes whose environment names this home folder: the stack and everything it started."""
    marker = f"MNIST_HITL_HOME={home}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


def assert_the_idle_stack_is_lean(supervisor: int, home: Path) -> None:
    """No MLflow job runner (its huey consumers), no TensorFlow in the supervisor (``mnist-hitl run``)."""
    commands = []
    for pid in processes_of(home):
        try:
            commands.append((Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    assert [command for command in commands if "huey" in command] == []
    assert "libtensorflow" not in (Path("/proc") / str(supervisor) / "maps").read_text()


def test_the_procfile_has_a_line_per_service():
    from honcho.environ import parse_procfile

    commands = parse_procfile(resource("Procfile").read_text()).processes
    assert list(commands) == ["app", "api", "prefect", "schedule", "mlflow", "lab", "metrics", "prometheus", "follow"]
    assert all(command.startswith("mnist-hitl ") for command in commands.values()), commands
    assert "wait-for" in commands["schedule"]  # the schedule starts once the Prefect server answers


def executed_by(line: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command line a Procfile line hands over to (``os.execvp``), run in this process with ``env``."""
    from typer.testing import CliRunner

    from mnist_hitl.cli import app

    argv = shlex.split(string.Template(line).substitute(env))
    assert argv[0] == "mnist-hitl"
    executed = []
    monkeypatch.setattr(os, "execvp", lambda program, args: executed.append(args))
    outcome = CliRunner().invoke(app, argv[1:], env=env)
    assert outcome.exit_code == 0 and len(executed) == 1, outcome.output
    return executed[0]


def served_by(line: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """The settings and the MLflow server a Procfile line serves in its own process, run here with ``env``."""
    from typer.testing import CliRunner

    from mnist_hitl.cli import app
    from mnist_hitl.services import mlflow_server

    argv = shlex.split(string.Template(line).substitute(env))
    served = []
    monkeypatch.setattr(mlflow_server, "serve_mlflow", lambda settings, server: served.append((settings, server)))
    outcome = CliRunner().invoke(app, argv[1:], env=env)
    assert outcome.exit_code == 0 and len(served) == 1, outcome.output
    return served[0]


def test_mlflow_and_prometheus_get_the_stacks_paths_address_and_ports(home, monkeypatch):
    from honcho.environ import parse_procfile

    from mnist_hitl.services.stack import stack_environment

    settings = home.replace(mlflow_port=free_port(), prometheus_port=free_port())
    env = stack_environment(settings)
    commands = parse_procfile(resource("Procfile").read_text()).processes
    served, mlflow = served_by(commands["mlflow"], env, monkeypatch)  # in that process: no `mlflow server` parent
    assert (served.app_host, served.mlflow_port) == ("127.0.0.1", settings.mlflow_port)
    assert mlflow.environment()["_MLFLOW_SERVER_FILE_STORE"] == env["MLFLOW_TRACKING_URI"]
    assert mlflow.environment()["_MLFLOW_SERVER_ARTIFACT_ROOT"] == str(settings.mlflow_artifacts_dir)
    assert mlflow.environment()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "_MLFLOW_SERVER_SERVE_ARTIFACTS" not in mlflow.environment()  # clients write the artifacts
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed")
    folder = settings.home / "prometheus"
    assert executed_by(commands["prometheus"], env, monkeypatch) == [
        shutil.which("prometheus"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
    ]
    assert f"127.0.0.1:{settings.prometheus_port}" in (folder / "prometheus.yml").read_text()  # written for it


def assert_lab_lists_the_notebooks(output: str, port: int) -> None:
    """JupyterLab lists the notebooks to whoever has the token the stack printed, and to nobody else."""
    token = re.search(rf"^\s+lab\s+http://127\.0\.0\.1:{port}/lab\?token=(\S+)", output, re.M).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=10) as response:
        names = {item["name"] for item in json.load(response)["content"]}
    assert {"monitor.ipynb", "retrain.ipynb", "explore.ipynb", "history.ipynb"} <= names
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=10)
    assert refused.value.code == 403


EVENT = re.compile(r"^\d\d:\d\d:\d\d ")  # the console's lines after the table: the time, the service, the event


def wait_for_events(log_path: Path, patterns: list[str], run: subprocess.Popen, timeout: float = 120) -> str:
    """The terminal's output once an event line matches each pattern (fails the test after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        output = log_path.read_text()
        missing = [p for p in patterns if not re.search(rf"^\d\d:\d\d:\d\d {p}", output, re.M)]
        if not missing:
            return output
        assert run.poll() is None and time.monotonic() < deadline, f"no event {missing}:\n{output[-5000:]}"
        time.sleep(0.5)


def assert_the_console_shows_events_and_the_logs_the_rest(output: str, home: Path, mlflow: int, restart: bool) -> None:
    """After the table, only event lines; each service's own output is in its log; MLflow opens on the runs."""
    after_table = output.split("Ctrl-C stops everything.\n", 1)[1].splitlines()
    assert [line for line in after_table if not EVENT.match(line)] == [], output[-5000:]
    logs = home / "logs"
    if shutil.which("prometheus"):
        assert "TSDB" in (logs / "prometheus.log").read_text() and "TSDB" not in output
    assert "extension was successfully loaded" in (logs / "lab.log").read_text()
    assert "extension" not in output
    assert "serving hitl-cycle every" in (logs / "schedule.log").read_text()
    experiment = rf"http://127\.0\.0\.1:{mlflow}/#/experiments/\d+"
    assert re.search(rf"mlflow +ready: {experiment}$", output, re.M), output[-5000:]
    if restart:  # the experiment exists now: the table points at it
        assert re.search(rf"^\s+mlflow\s+{experiment}\s", output, re.M), output[:3000]
    with urllib.request.urlopen(f"http://127.0.0.1:{mlflow}/ajax-api/3.0/mlflow/ui-telemetry", timeout=10) as answer:
        assert json.load(answer)["disable_ui_telemetry"] is True  # the UI sends nothing either


@pytest.mark.slow
def test_run_starts_every_service_ctrl_c_stops_them_and_a_restart_keeps_everything(home_with_model, tmp_path):
    settings = home_with_model
    home = settings.home
    ports = {name: free_port() for name in PORT_VARIABLES}
    env = {
        **os.environ,
        "MNIST_HITL_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        **{variable: str(ports[name]) for name, variable in PORT_VARIABLES.items()},
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with_prometheus = shutil.which("prometheus") is not None
    services = [name for name in HEALTH if with_prometheus or name != "prometheus"]

    # What a restart must keep: the model, a stored prediction, the last cycle's values.
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy as np\nfrom mnist_hitl import metrics\n"
            "from mnist_hitl.workbench import Workbench\n"
            "metrics.record_cycle('no_retrain')\n"
            "with Workbench(source='cli') as bench: bench.predict_picture(np.eye(28, dtype=np.uint8) * 255)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert writer.returncode == 0, writer.stderr
    models = sorted(p.name for p in settings.models_dir.iterdir())
    version = deployed_model(settings.models_dir).version
    ended_counter = [p for p in settings.metrics_dir.glob("counter_*.db")]
    kept_gauge = [p for p in settings.metrics_dir.glob("gauge_max_*.db")]
    assert ended_counter and kept_gauge

    for start in (1, 2):
        log_path = tmp_path / f"run-{start}.log"
        with open(log_path, "w") as log:
            run = start_cli(env, "run", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            waiting = set(services)
            while waiting and time.monotonic() < deadline and run.poll() is None:
                waiting = {name for name in waiting if not answers(f"http://127.0.0.1:{ports[name]}{HEALTH[name]}")}
                time.sleep(1)
            output = log_path.read_text()
            assert run.poll() is None, f"the stack stopped:\n{output[-5000:]}"
            assert not waiting, f"{sorted(waiting)} did not answer:\n{output[-5000:]}"

            for name in services:  # one clear line per service, with its URL
                assert re.search(rf"^\s+{name}\s+http://127\.0\.0\.1:{ports[name]}/", output, re.M), name
            started = dict(re.findall(r"^\d\d:\d\d:\d\d (\w+) +started \(pid (\d+)\)", output, re.M))
            assert set(started) == {*services, "schedule"}
            output = wait_for_events(log_path, [rf"{name} +ready" for name in {*services, "schedule"}], run)
            assert_the_console_shows_events_and_the_logs_the_rest(output, home, ports["mlflow"], restart=start > 1)
            assert {f"{name}.log" for name in {*services, "schedule"}} <= {p.name for p in (home / "logs").iterdir()}
            time.sleep(3)  # the schedule has had time to reach the server
            output = log_path.read_text()
            assert not re.search(r"schedule +(stopped|crashed)", output), output[-5000:]
            os.kill(int(started["schedule"]), 0)  # the schedule process is alive
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as response:
                assert f'mnist_hitl_deployed_model_info{{model_version="{version}"}} 1.0' in response.read().decode()
            assert_lab_lists_the_notebooks(output, ports["lab"])
            assert_the_idle_stack_is_lean(run.pid, home)

            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            assert run.wait(timeout=60) == 0
            output = log_path.read_text()
            for name in {*services, "schedule"}:
                assert re.search(rf"^\d\d:\d\d:\d\d {name} +(stopped|did not stop)", output, re.M), name
            deadline = time.monotonic() + 20
            while processes_of(home) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert processes_of(home) == [], "processes left after Ctrl-C"
            assert not any(answers(f"http://127.0.0.1:{ports[name]}{HEALTH[name]}") for name in services)
        finally:
            kill_all([run.pid, *processes_of(home)])
            run.wait(timeout=10)

        assert "trained now" not in output
        assert sorted(p.name for p in settings.models_dir.iterdir()) == models
        with Store(settings.db_path) as store:
            assert store.counts()["predictions"] == 1
        assert not any(path.exists() for path in ended_counter)  # ended writers' counters go
        assert all(path.exists() for path in kept_gauge)  # the last cycle's time stays


@pytest.mark.slow
def test_a_first_start_trains_in_a_child_leaves_a_lean_stack_and_ctrl_c_stops_it_within_seconds(home, tmp_path):
    ports = {name: free_port() for name in PORT_VARIABLES}
    env = {
        **os.environ,
        "MNIST_HITL_HOME": str(home.home),
        "PYTHONUNBUFFERED": "1",
        "MNIST_HITL_EPOCHS": "1",
        **{variable: str(ports[name]) for name, variable in PORT_VARIABLES.items()},
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    services = [name for name in HEALTH if shutil.which("prometheus") or name != "prometheus"]
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        run = start_cli(env, "run", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 400  # the training comes first
        waiting = set(services)
        while waiting and time.monotonic() < deadline and run.poll() is None:
            waiting = {name for name in waiting if not answers(f"http://127.0.0.1:{ports[name]}{HEALTH[name]}")}
            time.sleep(1)
        output = log_path.read_text()
        assert run.poll() is None and not waiting, f"{sorted(waiting)} did not answer:\n{output[-5000:]}"
        assert re.search(r"^model \S+ is deployed \(trained now\)$", output, re.M), output[-5000:]
        assert "training on 4000 bundled digits" in output  # the progress bar, on the terminal
        assert_the_idle_stack_is_lean(run.pid, home.home)

        left = ctrl_c(run, also=lambda: processes_of(home.home), timeout=15)
        assert left == [], f"left 15 s after Ctrl-C: {left}\n{log_path.read_text()[-3000:]}"
        assert [name for name, port in ports.items() if not port_is_free(port)] == []
    finally:
        kill_all([run.pid, *processes_of(home.home)])
        run.wait(timeout=10)
