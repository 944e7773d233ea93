"""Prometheus metrics of every mnist-hitl process, summed on one endpoint.

Every process that records something (each Voila kernel, the CLI, the learning-loop
flow) writes its values to its own memory-mapped files in ``$MNIST_HITL_HOME/metrics``:
prometheus_client's multiprocess mode. ``mnist-hitl metrics`` (:func:`mnist_hitl.services.exporter.serve_exporter`)
reads all the files at each scrape and serves the sums: counters and histograms add up
across processes, last-value gauges keep the most recent value written by any process.

The ``record_*`` functions are cheap and never raise: if the metrics folder cannot be
used, they log one warning and do nothing, so metrics never break a prediction or a
learning cycle. The folder is set up on the first call, from the settings of that
moment; a process whose ``MNIST_HITL_HOME`` changes (a test) moves to the new folder.

A full disk breaks nothing either. prometheus_client grows its files sparse, and writing a mapped
page with no block behind it on a full disk kills the process (SIGBUS); here each file gets its blocks
(``posix_fallocate``) before it is mapped or grown, so a full disk is an ``OSError`` then; the
process keeps its metrics in memory from there on (not exported) and says so once.

Files are named after the process that writes them, ``<host>-<pid>``, so containers
sharing one volume never write to the same file. :func:`clean_metrics_dir` removes the
files of processes of this host that are no longer alive, at start-up.

Metrics (all prefixed ``mnist_hitl_``):
    predictions_total{digit, model_version}    predictions served
    prediction_latency_seconds                 preprocess + inference + store, histogram
    labels_total{kind, digit}                  user labels: kind confirm / correct / adjudicate / undo, digit
    refusals_total{reason}                     refused inputs and failed requests
    http_request_duration_seconds{route, method, status}  HTTP API requests, histogram
    model_load_failures_total{reason}          deployed models a predictor could not load (see predictor)
    cycles_total{outcome}                      learning cycles by outcome (see CYCLE_OUTCOMES)
    last_cycle_timestamp_seconds               end of the last learning cycle
    drift_score                                drift score of the last monitor run
    class_error_ratio{digit}                   per-class error rate of the last monitor run
    labels_waiting                             labels waiting for the next cycle
    last_monitor_timestamp_seconds             time of the last monitor run
    deployed_model_timestamp_seconds           the deployed version's creation time
    deployed_model_info{model_version}         the deployed version (served by the exporter)
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from mnist_hitl import config
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.names import LABEL_KINDS, LOAD_FAILURE_REASONS, CycleOutcome

log = logging.getLogger(__name__)

PREFIX = "mnist_hitl"
CYCLE_OUTCOMES = tuple(outcome.value for outcome in CycleOutcome)
_OUTCOME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_unexpected_outcomes: set[str] = set()
DIGITS = tuple(range(10))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Gauge files of these modes keep a last known value that stays true after its writer
# exits (the last drift score, the last cycle's time), so start-up cleaning keeps them.
_LAST_VALUE_MODES = ("mostrecent", "max")
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
_FILE_NAME = re.compile(r"^(?P<prefix>counter|histogram|summary|gauge_(?P<mode>[a-z]+))_(?P<writer>[^_]+)\.db$")


@functools.cache
def _host() -> str:
    # '_' separates the parts of a metrics file name; keep it out of the writer's name.
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"


def process_identifier() -> str:
    """This process' name in the metrics folder: ``<host>-<pid>``."""
    return f"{_host()}-{os.getpid()}"


@functools.cache
def _allocated_files() -> type:
    """prometheus_client's memory-mapped file, every byte it maps given a block first (a full disk: ENOSPC)."""
    from prometheus_client import mmap_dict

    class AllocatedMmapedDict(mmap_dict.MmapedDict):
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                with open(filename, "a+b") as file:
                    size = os.fstat(file.fileno()).st_size
                    try:
                        os.posix_fallocate(file.fileno(), 0, size or mmap_dict._INITIAL_MMAP_SIZE)
                    except OSError:
                        if not size:  # an empty file would break the exporter's reading of the folder
                            os.unlink(filename)
                        raise
            super().__init__(filename, read_mode)

        def _init_value(self, key: str) -> None:
            # The entry's size as the parent lays it out; the parent doubles the file until it fits.
            encoded = len(key.encode("utf-8"))
            needed, capacity = self._used + 4 + encoded + (8 - (encoded + 4) % 8) + 16, self._capacity
            while needed > capacity:
                capacity *= 2
            if capacity > self._capacity:
                os.posix_fallocate(self._f.fileno(), 0, capacity)
            super()._init_value(key)

    return AllocatedMmapedDict


class _Instruments:
    """The metric objects of one process, writing to one multiprocess folder (or, ``in_memory``, to none)."""

    def __init__(self, directory: Path, in_memory: bool = False) -> None:
        from prometheus_client import Counter, Gauge, Histogram, values

        self.in_memory = in_memory
        if in_memory:
            self.value_class = values.ValueClass = values.MutexValue
        else:
            directory.mkdir(parents=True, exist_ok=True)
            # Read by prometheus_client at each file it opens; its value class is chosen at import: set both.
            config.export("PROMETHEUS_MULTIPROC_DIR", str(directory))
            values.MmapedDict = _allocated_files()  # the name its values open their files with
            self.value_class = values.MultiProcessValue(process_identifier=process_identifier)
            values.ValueClass = self.value_class

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, documentation, labels, namespace=PREFIX, registry=None)

        def gauge(name: str, documentation: str, mode: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, documentation, labels, namespace=PREFIX, registry=None, multiprocess_mode=mode)

        def histogram(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, documentation, labels, namespace=PREFIX, registry=None, buckets=LATENCY_BUCKETS)

        self.predictions = counter(
            "predictions", "Predictions served, by predicted digit and model version.", ("digit", "model_version")
        )
        self.latency = histogram(
            "prediction_latency_seconds", "Time to preprocess, predict and store one drawing, in seconds."
        )
        self.labels = counter("labels", "Labels given by users, by kind and true digit.", ("kind", "digit"))
        self.refusals = counter("refusals", "Refused inputs and failed requests, by reason.", ("reason",))
        self.cycles = counter("cycles", "Learning cycles, by outcome.", ("outcome",))
        self.model_load_failures = counter(
            "model_load_failures",
            "Deployed models a predictor could not load (it kept serving the one it held, if any), by reason.",
            ("reason",),
        )
        self._add_learning_gauges(gauge)
        self.http_latency = histogram(
            "http_request_duration_seconds",
            "HTTP API request time, by route, method and status.",
            ("route", "method", "status"),
        )
        self._start_at_zero()

    def _add_learning_gauges(self, gauge) -> None:
        """What the learning cycle publishes: its last run, drift, per-class errors, the deployed model."""
        self.last_cycle = gauge(
            "last_cycle_timestamp_seconds", "End of the last learning cycle, in seconds since the epoch.", "max"
        )
        self.drift_score = gauge(
            "drift_score",
            "Drift score of the users' drawings against the training data, from the last monitor run.",
            "mostrecent",
        )
        self.class_error = gauge(
            "class_error_ratio",
            "Share of labelled predictions of each true digit that were wrong, from the last monitor run.",
            "mostrecent",
            ("digit",),
        )
        self.labels_waiting = gauge(
            "labels_waiting", "Labels waiting for the next learning cycle, from the last monitor run.", "mostrecent"
        )
        self.last_monitor = gauge(
            "last_monitor_timestamp_seconds", "Time of the last monitor run, in seconds since the epoch.", "max"
        )
        self.deployed_model = gauge(
            "deployed_model_timestamp_seconds",
            "Creation time of the deployed model version (its version name), in seconds since the epoch.",
            "mostrecent",
        )

    def _start_at_zero(self) -> None:
        """Known label values start at zero, so rates and increases see their first event."""
        for kind in LABEL_KINDS:
            for digit in DIGITS:
                self.labels.labels(kind, str(digit))
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(outcome)
        for reason in LOAD_FAILURE_REASONS:
            self.model_load_failures.labels(reason)

    def close(self) -> None:
        if not self.in_memory:
            self.value_class.close_all_files()


_lock = threading.Lock()
_state: dict = {"home": None, "instruments": None, "failed": False, "pinned": None}


def use_folder(directory: Path | None) -> None:
    """Write this process' metrics to ``directory`` from now on (None: follow ``MNIST_HITL_HOME`` again)."""
    _state["pinned"] = None if directory is None else Path(directory)


def _instruments() -> _Instruments | None:
    """This process' instruments, set up (again) when the metrics folder changes."""
    home = _state["pinned"] or config.current_home() / "metrics"
    if _state["instruments"] is not None and _state["home"] == home:
        return _state["instruments"]
    with _lock:
        if _state["instruments"] is not None and _state["home"] == home:
            return _state["instruments"]
        if _state["failed"] and _state["home"] == home:
            return None
        previous = _state["instruments"]
        if previous is not None:
            previous.close()
        _state.update(home=home, instruments=None, failed=False)
        try:
            _state["instruments"] = _Instruments(home)
        except Exception as error:  # metrics must never break the caller
            if getattr(error, "errno", None) in _FULL_DISK:
                _keep_in_memory(home, error)
            else:
                _state["failed"] = True
                log.warning("metrics are off in this process: cannot use %s (%s)", home, error)
        return _state["instruments"]


def _keep_in_memory(directory: Path, error: OSError) -> None:
    """From now on this process' metrics live in its memory only, not exported (the lock is held)."""
    if getattr(_state["instruments"], "in_memory", False):
        return  # another thread got here first
    if _state["instruments"] is not None:
        _state["instruments"].close()
    log.warning("metrics are kept in memory from now on, not exported: %s is full (%s)", directory, error.strerror)
    _state["instruments"] = _Instruments(directory, in_memory=True)


def _record(action) -> None:
    try:
        instruments = _instruments()
        if instruments is not None:
            action(instruments)
    except Exception as error:  # metrics must never break the caller
        if getattr(error, "errno", None) not in _FULL_DISK:
            log.warning("could not record a metric: %s", error)
            return
        with _lock:
            _keep_in_memory(_state["home"], error)
            action(_state["instruments"])


def record_prediction(label: int, model_version: str, latency_seconds: float) -> None:
    """Count one stored prediction and observe its latency.

    Args:
        label: the predicted digit.
        model_version: the version that predicted it.
        latency_seconds: preprocessing, inference and storing, in seconds.
    """

    def action(m: _Instruments) -> None:
        m.predictions.labels(str(int(label)), str(model_version)).inc()
        m.latency.observe(float(latency_seconds))

    _record(action)


def record_label(label: int, kind: str) -> None:
    """Count one label: its ``kind`` (one of LABEL_KINDS) and true digit (an undo: the undone label's)."""
    if kind not in LABEL_KINDS:
        log.warning("label kind %r is not one of %s; not counted", kind, LABEL_KINDS)
        return
    _record(lambda m: m.labels.labels(kind, str(int(label))).inc())


def record_refusal(reason: str) -> None:
    """Count one refused input or failed request, by reason (an error's class name)."""
    _record(lambda m: m.refusals.labels(str(reason)).inc())


def record_http_request(route: str, method: str, status: int, seconds: float) -> None:
    """Observe one HTTP API request (its route template, not its path; the count is the histogram's)."""
    _record(lambda m: m.http_latency.labels(str(route), str(method), str(int(status))).observe(float(seconds)))


def record_model_load_failure(reason: str) -> None:
    """Count one deployed model a predictor could not load, by reason (see ``names.LOAD_FAILURE_REASONS``)."""
    _record(lambda m: m.model_load_failures.labels(str(reason)).inc())


def record_cycle(outcome: str) -> None:
    """Count one learning cycle by outcome and note its time.

    ``outcome`` is one of :data:`CYCLE_OUTCOMES` (``busy``: skipped, another cycle was running);
    another lower-case name is counted too, with a warning the first time.
    """
    outcome = str(outcome)
    if not _OUTCOME.match(outcome):
        log.warning("cycle outcome %r is not a lower-case name; not counted", outcome)
        return
    if outcome not in CYCLE_OUTCOMES and outcome not in _unexpected_outcomes:
        _unexpected_outcomes.add(outcome)
        log.warning("cycle outcome %r is not one of %s; counted anyway", outcome, CYCLE_OUTCOMES)

    def action(m: _Instruments) -> None:
        m.cycles.labels(outcome).inc()
        m.last_cycle.set(time.time())

    _record(action)


def record_monitor(drift_score: float, class_error_rates: dict[int, float], labels_waiting: int) -> None:
    """Publish the last monitor run's drift score, per-class error rates and waiting labels.

    Args:
        drift_score: the drift score against the training data.
        class_error_rates: error rate (0-1) per true digit; a digit left out (no labels)
            is published as NaN, so an older rate does not linger.
        labels_waiting: labels not yet used by a retraining.
    """

    def action(m: _Instruments) -> None:
        m.drift_score.set(float(drift_score))
        for digit in DIGITS:
            rate = class_error_rates.get(digit, class_error_rates.get(str(digit)))
            m.class_error.labels(str(digit)).set(float("nan") if rate is None else float(rate))
        m.labels_waiting.set(int(labels_waiting))
        m.last_monitor.set(time.time())

    _record(action)


def version_timestamp(version: str) -> float | None:
    """Seconds since the epoch of a version name like ``20261127-101244-090`` (UTC), or None."""
    try:
        moment = datetime.strptime(version[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        millis = int(version[16:19]) if len(version) >= 19 else 0
    except ValueError:
        return None
    return moment.timestamp() + millis / 1000


def set_deployed_model(version: str) -> None:
    """Publish the deployed model version (as its creation time; the exporter adds the name)."""
    stamp = version_timestamp(version)
    if stamp is None:
        log.warning("model version %r is not a timestamp; not published", version)
        return
    _record(lambda m: m.deployed_model.set(stamp))


def clean_metrics_dir(settings: Settings | None = None) -> list[Path]:
    """Remove the metrics files of this host's processes that are no longer running.

    Counters and histograms of finished processes go (Prometheus reads the drop as a
    counter reset); files of running processes, of other hosts (containers sharing the
    folder) and last-value gauges (the last drift score, the last cycle's time) stay.

    Returns:
        The files removed.
    """
    settings = settings or get_settings()
    directory = settings.metrics_dir
    directory.mkdir(parents=True, exist_ok=True)
    host = _host()
    removed = []
    for path in sorted(directory.glob("*.db")):
        match = _FILE_NAME.match(path.name)
        if match is None or match["mode"] in _LAST_VALUE_MODES:
            continue
        writer_host, _, pid = match["writer"].rpartition("-")
        if (writer_host or host) != host or not pid.isdigit() or _alive(int(pid)):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
