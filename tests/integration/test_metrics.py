"""Metrics add up across processes: what several writers record, one exporter serves as sums."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mnist_hitl import metrics
from mnist_hitl.config import get_settings
from mnist_hitl.model import deployed_model
from mnist_hitl.store import Store
from tests.support.helpers import REPO, free_port, start_cli

USER_SESSION = str(REPO / "tests" / "support" / "user_session.py")

# What the learning-loop flow publishes after a cycle.
FLOW = """
from mnist_hitl import metrics
metrics.record_monitor(0.25, {0: 0.1, 7: 0.5}, labels_waiting=12)
metrics.record_cycle("no_retrain")
metrics.record_cycle("promoted")
"""


def run_script(settings, script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "MNIST_HITL_HOME": str(settings.home)}
    return subprocess.Popen(
        [sys.executable, script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_python(settings, code: str, *args: str) -> subprocess.Popen:
    return run_script(settings, "-c", code, *args)


def finish(*processes: subprocess.Popen) -> None:
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err


@pytest.fixture
def exporter(home_with_model):
    """``mnist-hitl metrics`` on a free port; yields a function returning the parsed scrape."""
    port = free_port()
    process = start_cli(
        home_with_model, "metrics", "--port", str(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def scrape() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        scrape.text = text
        return samples

    deadline = time.monotonic() + 30
    while True:
        try:
            scrape()
            break
        except OSError:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the exporter did not answer"
            time.sleep(0.2)
    yield scrape
    process.terminate()
    process.wait(timeout=10)


def values(samples: dict, name: str, label: str | None = None) -> dict:
    """{label value: sample value} of one metric (or {(): value} without a label)."""
    found = {}
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            found[dict(labels).get(label) if label else ()] = value
    return found


def test_metrics_add_up_across_processes(home_with_model, exporter):
    settings = home_with_model
    # Two users' sessions at the same time, then the flow's cycle: three writers.
    finish(run_script(settings, USER_SESSION, "0", "12"), run_script(settings, USER_SESSION, "100", "9"))
    finish(run_python(settings, FLOW))
    samples = exporter()

    with Store(settings.db_path) as store:
        predictions = store.predictions()
        labels = store.labels()
    assert len(predictions) == 21 and len(labels) == 21
    expected = Counter((str(p.predicted_label), p.model_version) for p in predictions)
    served = {
        (dict(labels_)["digit"], dict(labels_)["model_version"]): value
        for (name, labels_), value in samples.items()
        if name == "mnist_hitl_predictions_total"
    }
    assert served == expected
    served = {
        (dict(labels_)["kind"], dict(labels_)["digit"]): value
        for (name, labels_), value in samples.items()
        if name == "mnist_hitl_labels_total"
    }
    assert len(served) == 40  # every kind (confirm, correct, adjudicate, undo) and digit, zeros included
    assert {key: n for key, n in served.items() if n} == Counter((label.kind, str(label.label)) for label in labels)
    assert {label.kind for label in labels} == {"confirm", "correct"}
    assert values(samples, "mnist_hitl_prediction_latency_seconds_count") == {(): 21}
    assert 0 < values(samples, "mnist_hitl_prediction_latency_seconds_sum")[()] < 21 * 2.5
    assert values(samples, "mnist_hitl_refusals_total", "reason") == {"EmptyDrawingError": 2}

    cycles = values(samples, "mnist_hitl_cycles_total", "outcome")
    assert cycles == {"no_new_data": 0, "no_retrain": 1, "promoted": 1, "rejected": 0, "failed": 0, "busy": 0}
    assert time.time() - 60 < values(samples, "mnist_hitl_last_cycle_timestamp_seconds")[()] <= time.time()
    assert values(samples, "mnist_hitl_drift_score") == {(): 0.25}
    assert values(samples, "mnist_hitl_labels_waiting") == {(): 12}
    errors = values(samples, "mnist_hitl_class_error_ratio", "digit")
    assert errors["0"] == 0.1 and errors["7"] == 0.5 and math.isnan(errors["3"]) and len(errors) == 10

    version = deployed_model(settings.models_dir).version
    assert values(samples, "mnist_hitl_deployed_model_info", "model_version") == {version: 1}
    assert values(samples, "mnist_hitl_deployed_model_timestamp_seconds") == {
        (): pytest.approx(metrics.version_timestamp(version))
    }

    writers = {path.stem.rsplit("_", 1)[1] for path in settings.metrics_dir.glob("*.db")}
    assert len(writers) >= 4  # two sessions, the flow, the exporter


def test_metric_names_and_help_follow_prometheus_conventions(home_with_model, exporter, require_binary):
    require_binary("promtool", "prometheus")
    finish(run_script(home_with_model, USER_SESSION, "0", "3"), run_python(home_with_model, FLOW))
    exporter()
    text = exporter.text
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    ours = [family for family in text_string_to_metric_families(text)]
    assert ours and all(family.name.startswith("mnist_hitl_") for family in ours)
    assert all(family.documentation.endswith(".") for family in ours)


def test_recording_never_fails_and_follows_the_home_folder(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MNIST_HITL_HOME", str(blocker / "home"))  # cannot be created
    metrics.record_prediction(3, "20261127-101244-090", 0.01)
    metrics.record_label(3, "correct")
    metrics.record_refusal("EmptyDrawingError")
    metrics.record_cycle("failed")
    metrics.record_monitor(0.1, {}, 0)
    metrics.set_deployed_model("20261127-101244-090")
    metrics.record_cycle("not-an-outcome")
    assert "metrics are off" in caplog.text

    monkeypatch.setenv("MNIST_HITL_HOME", str(tmp_path / "home"))
    metrics.record_cycle("failed")
    settings = get_settings()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(settings.metrics_dir)
    from prometheus_client.multiprocess import MultiProcessCollector

    merged = {m.name: m for m in MultiProcessCollector.merge(list(map(str, settings.metrics_dir.glob("*.db"))))}
    failed = [s.value for s in merged["mnist_hitl_cycles"].samples if s.labels == {"outcome": "failed"}]
    assert failed == [1.0]


def test_clean_metrics_dir_removes_only_the_files_of_ended_processes(home, monkeypatch):
    finish(run_python(home, FLOW))  # a writer that has ended
    monkeypatch.setenv("MNIST_HITL_HOME", str(home.home))
    metrics.record_refusal("StoreError")  # this process: alive
    directory = home.metrics_dir
    ours = metrics.process_identifier()
    ended = {p.name for p in directory.glob("*.db") if not p.name.endswith(f"_{ours}.db")}
    assert {"counter", "gauge_max", "gauge_mostrecent"} <= {n.rsplit("_", 1)[0] for n in ended}
    other_host = directory / "counter_another-host-1.db"
    shutil.copy(directory / f"counter_{ours}.db", other_host)
    before = {p.name for p in directory.glob("*.db")}

    removed = {p.name for p in metrics.clean_metrics_dir(home)}

    assert removed == {n for n in ended if n.startswith(("counter_", "histogram_"))} and removed
    left = {p.name for p in directory.glob("*.db")}
    assert left == before - removed
    assert f"counter_{ours}.db" in left and other_host.name in left
    # The last values of the ended flow survive a restart.
    from prometheus_client.multiprocess import MultiProcessCollector

    merged = {m.name: m for m in MultiProcessCollector.merge([str(directory / n) for n in left])}
    assert merged["mnist_hitl_drift_score"].samples[0].value == 0.25
    assert merged["mnist_hitl_last_cycle_timestamp_seconds"].samples[0].value > time.time() - 60


def test_version_timestamp_reads_the_version_name():
    assert metrics.version_timestamp("19700101-000001-500") == 1.5
    assert metrics.version_timestamp("not-a-version") is None
