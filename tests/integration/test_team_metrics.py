"""The team's agreement as Prometheus metrics: after a cycle has recorded it, the exporter's /metrics serves
the figures of ``GET /agreement``, with at most 50 reviewers' series however large the team."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mnist_hitl.config import Settings
from mnist_hitl.learning.loop.record import record_agreement
from mnist_hitl.services.exporter import exporter_server
from mnist_hitl.store import Store
from mnist_hitl.workbench.agreement import MAX_REVIEWERS, agreement

PROBS = [0.01] * 9 + [0.91]


class CycleRun:
    """What a cycle's MLflow run is given: the figures are kept here."""

    def __init__(self) -> None:
        self.logged: dict = {}

    def metrics(self, values: dict) -> None:
        self.logged.update(values)

    def json(self, data: dict, name: str) -> None:
        self.logged[name] = data


def a_cycle_records_agreement(home: Settings) -> CycleRun:
    run = CycleRun()
    with Store(home.db_path) as store:
        record_agreement(home, store, run)
    return run


@pytest.fixture
def scrape(home: Settings) -> Iterator:
    """The exporter on a free port of 127.0.0.1; a function returning {(name, labels): value} of a scrape."""
    server = exporter_server(home, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def samples() -> dict:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return found

    yield samples
    server.shutdown()
    server.server_close()


def test_the_exporter_serves_alpha_each_pairs_kappa_and_each_reviewers_labels_and_agreement(home, scrape) -> None:
    assert not any(name.startswith("mnist_hitl_team") for name, _ in scrape())  # no cycle yet: none shown
    with Store(home.db_path) as store:
        ids = [store.record_prediction(b"\x89PNG stand-in", 9, PROBS, "v1", 1.0) for _ in range(4)]
        for pid, (ada, bob, cy) in zip(ids, [(1, 1, 1), (2, 2, 7), (3, 8, 3), (4, 4, 4)], strict=True):
            store.add_label(pid, ada, "correct", reviewer="ada")
            store.add_label(pid, bob, "correct", reviewer="bob")
            store.add_label(pid, cy, "correct", reviewer="cy")
        store.add_label(ids[0], 5, "correct", reviewer="ada")
        store.undo_label(ids[0], reviewer="ada")
        figures = agreement(store.labels())
    assert not any(name.startswith("mnist_hitl_team") for name, _ in scrape())  # as of the last cycle
    assert a_cycle_records_agreement(home).logged["agreement.json"] == figures
    samples = scrape()
    assert samples["mnist_hitl_team_alpha", ()] == figures["alpha"]
    assert samples["mnist_hitl_team_shared_drawings", ()] == 4
    kappas = {labels: value for (name, labels), value in samples.items() if name == "mnist_hitl_team_kappa"}
    assert kappas == {
        (("first", pair["reviewers"][0]), ("second", pair["reviewers"][1])): pair["kappa"] for pair in figures["kappa"]
    }
    assert len(kappas) == 3
    labels = {
        dict(key)["reviewer"]: v for (name, key), v in samples.items() if name == "mnist_hitl_reviewer_labels_total"
    }
    assert labels == {"ada": 5, "bob": 4, "cy": 4}  # undos apart
    shares = {dict(key)["reviewer"]: v for (name, key), v in samples.items() if name == "mnist_hitl_reviewer_agreement"}
    assert shares == {name: score["agreement"] for name, score in figures["quality"].items()}
    assert shares == {"ada": 0.6667, "bob": 0.5, "cy": 0.5}  # ties go to the later label: cy's on 2 and 3


def test_a_large_team_is_served_as_its_busiest_reviewers_only(home, scrape) -> None:
    with Store(home.db_path) as store:
        pid = store.record_prediction(b"\x89PNG stand-in", 9, PROBS, "v1", 1.0)
        for number in range(MAX_REVIEWERS + 10):
            for _ in range(2 if number < MAX_REVIEWERS else 1):  # the first 50 are the busiest
                store.add_label(pid, number % 10, "correct", reviewer=f"r{number:03d}")
    a_cycle_records_agreement(home)
    samples = scrape()
    labelled = {dict(key)["reviewer"] for name, key in samples if name == "mnist_hitl_reviewer_labels_total"}
    assert labelled == {f"r{number:03d}" for number in range(MAX_REVIEWERS)}
    assert sum(name == "mnist_hitl_team_kappa" for name, _ in samples) <= 50
