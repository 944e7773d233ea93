"""`mnist-hitl logs`: the stack's logs, one service's or all of them, and following them until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from mnist_hitl.config import Settings
from tests.support.helpers import run_cli, start_cli


def write_logs(settings: Settings, logs: dict[str, str]) -> Path:
    """Logs as `mnist-hitl run` leaves them under the home."""
    folder = settings.home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for service, text in logs.items():
        (folder / f"{service}.log").write_text(text)
    return folder


def test_one_services_log_shows_its_last_lines(home):
    lines = [f"lab line {n}" for n in range(100)]
    write_logs(home, {"lab": "\n".join(lines) + "\n", "mlflow": "mlflow line\n"})
    shown = run_cli(home, "logs", "lab", "-n", "5").stdout.splitlines()
    assert shown == lines[-5:]


def test_without_a_service_every_log_is_shown_its_lines_named_by_service(home):
    folder = write_logs(home, {"prometheus": "TSDB started\ncompaction done\n", "app": "voila up\n"})
    shown = run_cli(home, "logs").stdout.splitlines()
    assert f"app        | ==> {folder / 'app.log'} (9 B)" in shown
    assert shown.index("app        | voila up") < shown.index("prometheus | TSDB started")
    assert "prometheus | compaction done" in shown


def test_an_unknown_service_is_one_line_and_exit_status_2(home):
    write_logs(home, {"app": "voila up\n"})
    done = run_cli(home, "logs", "nosuch", check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: no service 'nosuch': the stack's services are "
        "app, api, prefect, schedule, mlflow, lab, metrics, prometheus, follow"
    ]


def test_a_service_that_has_not_run_yet_has_no_log(home):
    done = run_cli(home, "logs", "lab", check=False)
    assert done.returncode == 1 and "no log of lab" in done.stderr and "Traceback" not in done.stderr


def test_follow_prints_new_lines_as_they_come_until_ctrl_c(home, tmp_path):
    folder = write_logs(home, {"schedule": "old line\n"})
    output = tmp_path / "out.txt"
    with open(output, "w") as out:
        follower = start_cli(home, "logs", "schedule", "-f", stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "old line" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        with open(folder / "schedule.log", "a") as log:
            log.write("cycle 1: promoted\npart of a li")
        while "cycle 1: promoted" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
    finally:
        follower.kill()
    assert output.read_text().splitlines() == ["old line", "cycle 1: promoted"]  # a line shows once it ends
