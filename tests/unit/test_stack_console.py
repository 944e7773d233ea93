"""The stack's console: every line of a service goes to its log, the terminal gets the events only."""

from __future__ import annotations

import io
from datetime import datetime

from honcho.printer import Message

from mnist_hitl.services.console import StackConsole
from mnist_hitl.services.logs import open_logs

NOW = datetime(2026, 12, 7, 14, 0, 5)


def console_for(tmp_path, names=("prometheus", "schedule")):
    terminal = io.StringIO()
    folder = tmp_path / "logs"
    return StackConsole(terminal, open_logs(folder, names), folder, tail=3), terminal, folder


def say(console, name, text):
    console.write(Message("line", text.encode(), NOW, name, None))


def test_a_services_lines_go_to_its_log_and_its_events_to_the_terminal(tmp_path):
    console, terminal, folder = console_for(tmp_path)
    say(console, "system", "prometheus started (pid=41)\n")
    say(console, "prometheus", 'time=2026-12-07T14:00:05Z level=INFO source=head.go msg="TSDB started"\n')
    say(console, "schedule", "serving hitl-cycle every 60 min (0 * * * *) to http://127.0.0.1:4200/api\n")
    say(
        console,
        "schedule",
        "14:00:09.120 | INFO    | Flow run '\x1b[35mlush-owl\x1b[0m' - cycle 20261207T140000: promoted\n",
    )
    say(console, "schedule", "14:00:09.121 | INFO    | Flow run 'lush-owl' -   the challenger is better\n")
    console.mark_ready("prometheus", when=NOW)
    say(console, "system", "SIGINT received\n")
    say(console, "system", "sending SIGTERM to prometheus (pid 41)\n")
    say(console, "system", "prometheus stopped (rc=-15)\n")

    assert terminal.getvalue().splitlines()[:3] == [
        "14:00:05 prometheus  started (pid 41)",
        "14:00:05 schedule    ready",
        "14:00:05 schedule    cycle 20261207T140000: promoted",
    ]
    assert terminal.getvalue().splitlines()[-3:] == [
        "14:00:05 prometheus  ready",
        "14:00:05             Ctrl-C: stopping every service",
        "14:00:05 prometheus  stopped (signal 15)",
    ]
    assert "TSDB" not in terminal.getvalue()
    assert (folder / "prometheus.log").read_text().splitlines() == [
        "--- 2026-12-07 14:00:05 started (pid 41) ---",
        'time=2026-12-07T14:00:05Z level=INFO source=head.go msg="TSDB started"',
        "--- 2026-12-07 14:00:05 sent SIGTERM ---",
        "--- 2026-12-07 14:00:05 stopped (signal 15) ---",
    ]


def test_a_crash_prints_the_services_last_lines_and_where_its_log_is(tmp_path):
    console, terminal, folder = console_for(tmp_path)
    for n in range(5):
        say(console, "schedule", f"line {n}\n")
    say(console, "schedule", "RuntimeError: the database is locked\n")
    say(console, "system", "schedule stopped (rc=1)\n")
    say(console, "system", "sending SIGTERM to prometheus (pid 41)\n")
    say(console, "system", "prometheus stopped (rc=0)\n")
    assert terminal.getvalue().splitlines() == [
        f"14:00:05 schedule    crashed (exit 1); its last lines, from {folder / 'schedule.log'}:",
        "    line 3",
        "    line 4",
        "    RuntimeError: the database is locked",
        "14:00:05 prometheus  stopped (exit 0)",  # stopped by the stack, no crash of its own
    ]


def test_a_service_killed_for_not_stopping_is_named(tmp_path):
    console, terminal, _ = console_for(tmp_path)
    say(console, "system", "SIGTERM received\n")
    say(console, "system", "sending SIGKILL to schedule (pid 7)\n")
    say(console, "system", "sending SIGKILL to schedule (pid 7)\n")  # honcho's loop, a tenth of a second later
    assert terminal.getvalue().splitlines() == [
        "14:00:05             SIGTERM: stopping every service",
        "14:00:05 schedule    did not stop within 5 s: killed (SIGKILL)",
    ]
