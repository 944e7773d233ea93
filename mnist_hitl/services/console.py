"""What ``mnist-hitl run`` shows in the terminal: one line per event that matters, the rest in the logs.

Nine services print hundreds of lines a minute between them (Prometheus' TSDB compactions, JupyterLab's
extensions, uvicorn's requests), and the line a person needs scrolls away among them. honcho hands every
line to its printer; :class:`StackConsole` writes each to its service's log (:mod:`.logs`) and prints
only the events: a service started, ready (its port answers: :func:`watch_ports`; the schedule once it
says it serves the cycle), stopped, or crashed, and each learning cycle's outcome. A crash prints the
service's last lines and its log's path, so what explains it is on the screen.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from mnist_hitl.services.logs import last_lines, log_path

SYSTEM = "system"  # the name honcho gives its own messages
STARTED = re.compile(r"^(\S+) started \(pid=(\d+)\)")
STOPPED = re.compile(r"^(\S+) stopped \(rc=(-?\d+)\)")
RECEIVED = re.compile(r"^(SIG\w+) received")
SENDING = re.compile(r"^sending (SIG\w+) to (\S+) \(pid (\d+)\)")
# A service's own lines that are events: the schedule's announcement, the summary line of each cycle
# (mnist_hitl.learning.loop.schedule.hitl_cycle logs "cycle <id>: <outcome>"), Prefect's word on a crashed run.
READY_LINES = {"schedule": re.compile(r"hitl-cycle every \d+ min")}
CYCLE_OUTCOME = re.compile(r"Flow run '[^']+' - cycle (\S+): (\w+)\s*$")
CYCLE_CRASHED = re.compile(r"Reported flow run '[^']+' as crashed: (.*)$")
SIGNALS = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM"}
COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # colour codes, should a service write them to a pipe anyway


class StackConsole:
    """honcho's printer for the stack (its ``write(message)``): logs every line, prints the events.

    Args:
        terminal: where the events go (the supervisor's stdout).
        logs: each service's open log (:func:`mnist_hitl.services.logs.open_logs`).
        folder: the logs' folder, named when a crash is reported.
        tail: how many of a crashed service's last lines to print.
    """

    def __init__(self, terminal: TextIO, logs: dict[str, BinaryIO], folder: Path, tail: int = 12) -> None:
        self.terminal, self.logs, self.folder, self.tail = terminal, logs, folder, tail
        self.width = 0  # honcho sets it to its longest name; ours is the services' longest
        self.name_width = max((len(name) for name in logs), default=0)
        self.stopping = False  # once the stack is being stopped, a service's end is no crash
        self.ready: set[str] = set()
        self.sent: set[tuple[str, str]] = set()  # (service, signal) honcho has sent
        self._lock = threading.Lock()

    def write(self, message) -> None:
        """One message from honcho: a line of a service's output, or one of honcho's own."""
        text = message.data.decode(errors="replace") if isinstance(message.data, bytes) else message.data
        if message.name == SYSTEM:
            self._system(text.strip(), message.time)
        else:
            self._line(message.name, text, message.time)

    def event(self, name: str, text: str, when: datetime | None = None) -> None:
        """One line on the terminal: the time, the service, what happened."""
        when = when or datetime.now()
        with self._lock:
            print(f"{when:%H:%M:%S} {name:<{self.name_width}}  {text}", file=self.terminal, flush=True)

    def mark_ready(self, name: str, detail: str = "", when: datetime | None = None) -> None:
        """Report a service ready, once."""
        with self._lock:
            if name in self.ready or self.stopping:
                return
            self.ready.add(name)
        self.event(name, "ready" + (f": {detail}" if detail else ""), when)

    def _line(self, name: str, text: str, when: datetime) -> None:
        self._log(name, text if text.endswith("\n") else text + "\n")
        line = COLOURS.sub("", text.rstrip("\r\n"))
        if (ready := READY_LINES.get(name)) and ready.search(line):
            self.mark_ready(name, when=when)
        if outcome := CYCLE_OUTCOME.search(line):
            self.event(name, f"cycle {outcome.group(1)}: {outcome.group(2)}", when)
        elif crashed := CYCLE_CRASHED.search(line):
            self.event(name, f"a cycle crashed: {crashed.group(1)}", when)

    def _system(self, text: str, when: datetime) -> None:
        if started := STARTED.match(text):
            name, pid = started.groups()
            self._log(name, f"--- {when:%Y-%m-%d %H:%M:%S} started (pid {pid}) ---\n")
            self.event(name, f"started (pid {pid})", when)
        elif stopped := STOPPED.match(text):
            self._stopped(stopped.group(1), int(stopped.group(2)), when)
        elif received := RECEIVED.match(text):
            self.stopping = True
            self.event("", f"{SIGNALS.get(received.group(1), received.group(1))}: stopping every service", when)
        elif sending := SENDING.match(text):
            signal_name, name, _ = sending.groups()
            self.stopping = True
            if (name, signal_name) in self.sent:  # honcho repeats its SIGKILL until the process is gone
                return
            self.sent.add((name, signal_name))
            self._log(name, f"--- {when:%Y-%m-%d %H:%M:%S} sent {signal_name} ---\n")
            if signal_name == "SIGKILL":
                self.event(name, "did not stop within 5 s: killed (SIGKILL)", when)
        else:
            self.event("", text, when)

    def _stopped(self, name: str, returncode: int, when: datetime) -> None:
        how = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
        self._log(name, f"--- {when:%Y-%m-%d %H:%M:%S} stopped ({how}) ---\n")
        if self.stopping:
            self.event(name, f"stopped ({how})", when)
            return
        self.stopping = True  # honcho stops the others now
        path = log_path(self.folder, name)
        what = "crashed" if returncode != 0 else "stopped by itself"
        self.event(name, f"{what} ({how}); its last lines, from {path}:", when)
        with self._lock:
            for line in last_lines(path, self.tail + 1)[:-1]:  # without the marker just written
                print(f"    {line}", file=self.terminal)
            self.terminal.flush()

    def _log(self, name: str, text: str) -> None:
        log = self.logs.get(name)
        if log is not None:
            log.write(text.encode(errors="replace"))


def watch_ports(
    console: StackConsole,
    ports: dict[str, tuple[str, int]],
    stop: threading.Event,
    details: dict[str, Callable[[], str]] | None = None,
    interval: float = 0.5,
) -> None:
    """Report each service ready once its port accepts a connection, until all have or ``stop`` is set.

    Args:
        ports: the address each service listens on, by name.
        details: what to add to a service's ready line, asked once it is ready (MLflow's experiment page).
    """
    waiting = dict(ports)
    while waiting and not stop.wait(interval) and not console.stopping:
        for name, address in list(waiting.items()):
            if _accepts(address):
                del waiting[name]
                detail = (details or {}).get(name)
                console.mark_ready(name, detail() if detail else "")


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False
