"""The learning loop's rules: the decision, the watermarks, the lock, quiet and failing cycles.

No TensorFlow and no training here; the cycles below stop before retraining.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from mnist_hitl.files import write_json
from mnist_hitl.learning.loop import cycle, lock, watermarks
from mnist_hitl.learning.loop.notebooks import resolve_window
from mnist_hitl.learning.loop.schedule import cron_for
from mnist_hitl.learning.monitor.decision import Thresholds, decide
from mnist_hitl.learning.monitor.monitoring import DecisionError, error_counts, read_decision
from mnist_hitl.store import Store

T = Thresholds(min_new_labels=20, drift_threshold=0.1, fail_threshold=5)
NO_ERRORS = {d: 0 for d in range(10)}


# the decision rule ------------------------------------------------------------------


def test_too_few_labels_never_retrain_even_with_drift_and_errors():
    decision = decide(19, 2.0, {**NO_ERRORS, 3: 12}, T)
    assert not decision.retrain
    assert "fewer than the 20 needed" in decision.reasons[0]


def test_enough_labels_and_drift_retrain():
    decision = decide(20, 0.35, NO_ERRORS, T)
    assert decision.retrain
    assert "exceeds the threshold 0.1" in decision.reasons[1]


def test_enough_labels_and_a_failing_class_retrain():
    decision = decide(40, 0.02, {**NO_ERRORS, 7: 5, 1: 6}, T)
    assert decision.retrain
    assert "classes with at least 5 errors: 1 (6), 7 (5)" in decision.reasons[2]


def test_enough_labels_without_drift_or_errors_do_not_retrain():
    decision = decide(200, 0.1, {**NO_ERRORS, 2: 4}, T)  # the drift must exceed the threshold, not equal it
    assert not decision.retrain
    assert "does not exceed" in decision.reasons[1] and "most in one class: 4" in decision.reasons[2]
    assert decision.reasons[-1] == "decision: do not retrain"


def test_unmeasured_drift_is_not_drift():
    assert not decide(25, math.nan, NO_ERRORS, T).retrain
    assert decide(25, math.nan, {**NO_ERRORS, 0: 5}, T).retrain


def test_error_counts_and_confusion_matrix():
    labels = np.array([3, 3, 3, 5, 5, 0])
    predicted = np.array([3, 5, 8, 5, 3, 0])
    counts, errors, confusion = error_counts(labels, predicted)
    assert counts[3] == 3 and errors[3] == 2 and errors[5] == 1 and errors[0] == 0
    assert confusion[3, 8] == 1 and confusion[5, 3] == 1 and confusion.sum() == 6
    assert np.trace(confusion) == 3


def test_decision_file_must_be_a_decision(tmp_path):
    path = tmp_path / "decision.json"
    with pytest.raises(DecisionError, match="no readable decision"):
        read_decision(path)
    path.write_text(json.dumps({"retrain": "yes"}))
    with pytest.raises(DecisionError, match="not a decision"):
        read_decision(path)
    write_json(path, {"retrain": False, "reasons": ["few labels"], "new_labels": 3})
    assert read_decision(path)["reasons"] == ["few labels"]


# watermarks ----------------------------------------------------------------------------


def test_watermarks_start_at_zero_and_never_go_back(home):
    with Store(home.db_path) as store:
        assert watermarks.watermarks(store) == watermarks.Watermarks(0, 0, None)
        marks = watermarks.advance_watermarks(store, seen_through=12)
        assert (marks.seen_through, marks.retrained_through, marks.last_retrain_at) == (12, 0, None)
        marks = watermarks.advance_watermarks(store, seen_through=30, retrained_through=30)
        assert (marks.seen_through, marks.retrained_through) == (30, 30) and marks.last_retrain_at
        marks = watermarks.advance_watermarks(store, seen_through=5, retrained_through=7)
        assert (marks.seen_through, marks.retrained_through) == (30, 30)


def add_labels(settings, labels: list[int], predicted: int = 1) -> list[int]:
    """Store MNIST digits as predictions of ``predicted`` with the given labels; returns the label ids."""
    from mnist_hitl.learning.data import load_bundled
    from mnist_hitl.preprocess import encode_png

    digits = load_bundled().x_train
    with Store(settings.db_path) as store:
        ids = []
        for i, label in enumerate(labels):
            prediction = store.record_prediction(encode_png(digits[i]), predicted, [0.1] * 10, "v1", 1.0)
            ids.append(store.add_label(prediction, label, "confirm" if label == predicted else "correct"))
        return ids


def test_newest_label_and_window(home):
    ids = add_labels(home, [1, 2, 3])
    with Store(home.db_path) as store:
        assert watermarks.newest_label_id(store) == ids[-1]
        watermarks.advance_watermarks(store, ids[0], ids[0])
        assert resolve_window(store, None, None) == (ids[0], ids[-1])
        assert resolve_window(store, 0, 2) == (0, 2)


# one cycle at a time -------------------------------------------------------------------


def _hold_lock(home: str, ready, release) -> None:
    import os

    os.environ["MNIST_HITL_HOME"] = home
    from mnist_hitl.config import get_settings

    with lock.cycle_lock(get_settings()):
        ready.set()
        release.wait(30)


def test_a_second_cycle_exits_at_once_with_a_clear_message(home):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(home.home), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        busy = rf"another learning cycle is running: cycle .* \(pid {holder.pid}"
        with pytest.raises(lock.CycleBusy, match=busy), lock.cycle_lock(home):
            pass
        summary = cycle.run_cycle(settings=home)
        assert summary["outcome"] == "busy" and f"pid {holder.pid}" in summary["message"]
    finally:
        release.set()
        holder.join(30)
    with lock.cycle_lock(home) as cycle_id:  # released when the holder is gone
        assert cycle_id


def test_the_lock_is_released_when_the_holder_dies(home):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(home.home), ready, release))
    holder.start()
    assert ready.wait(60)
    holder.kill()
    holder.join(30)
    with lock.cycle_lock(home):
        pass


# quiet and failing cycles ------------------------------------------------------------


def test_a_cycle_without_new_labels_only_records_that(home):
    first = cycle.run_cycle(settings=home)
    assert first["outcome"] == "no_new_data" and "nothing to do" in first["message"]
    assert not home.runs_dir.exists()  # no notebook ran
    with Store(home.db_path) as store:
        assert cycle.last_cycle(store)["cycle_id"] == first["cycle_id"]
    from mnist_hitl.learning import tracking

    client = tracking.client(home)
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.tags["outcome"] == "no_new_data" and run.info.status == "FINISHED"


@pytest.mark.slow  # runs the monitor notebook twice
def test_labels_are_never_counted_twice(home, monkeypatch):
    """A cycle that decides not to retrain moves the 'seen' watermark: the next one has nothing to do,
    while the labels waiting for a retraining keep adding up."""
    for name, value in (("MIN_NEW_LABELS", "50"), ("FAIL_THRESHOLD", "1000"), ("DRIFT_THRESHOLD", "100")):
        monkeypatch.setenv(name, value)
    from mnist_hitl.config import get_settings

    settings = get_settings()
    add_labels(settings, [1] * 20 + [2] * 5)
    first = cycle.run_cycle(settings=settings, monitor_params={"reference_size": 300})
    assert first["outcome"] == "no_retrain" and first["new_labels"] == 25
    assert "fewer than the 50 needed" in first["reasons"][0]
    assert first["watermarks"]["seen_through"] == 25 and first["watermarks"]["retrained_through"] == 0
    assert cycle.run_cycle(settings=settings)["outcome"] == "no_new_data"
    add_labels(settings, [3] * 30)
    third = cycle.run_cycle(settings=settings, monitor_params={"reference_size": 300})
    assert third["outcome"] == "no_retrain" and third["new_labels"] == 55
    decision = json.loads((settings.runs_dir / f"cycle-{third['cycle_id']}" / "decision.json").read_text())
    assert (decision["since_label_id"], decision["through_label_id"]) == (0, 55)
    assert decision["class_errors"]["2"] == 5 and decision["class_errors"]["3"] == 30
    assert decision["class_error_rates"]["1"] == 0


def test_a_failing_stage_fails_the_cycle_and_changes_nothing(home, monkeypatch, tmp_path):
    import nbformat

    broken = tmp_path / "notebooks"
    broken.mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("home = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("raise RuntimeError('the monitor broke')"),
        ]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, broken / "monitor.ipynb")
    add_labels(home, [4] * 3)
    with pytest.raises(cycle.CycleFailed, match="monitor.ipynb failed .*the monitor broke"):
        cycle.run_cycle(settings=home.replace(notebooks_override=broken))
    with Store(home.db_path) as store:
        assert watermarks.watermarks(store) == watermarks.Watermarks(0, 0, None)
        assert not store.get_meta(cycle.RUNNING_CYCLE)
        summary = cycle.last_cycle(store)
    assert summary["outcome"] == "failed" and "the monitor broke" in summary["error"]
    from mnist_hitl.learning import tracking

    client = tracking.client(home)
    runs = client.search_runs([tracking.experiment_id(home)])
    assert {run.info.run_name: run.info.status for run in runs} == {
        f"cycle {summary['cycle_id']}": "FAILED",
        "monitor": "FAILED",
    }
    (parent,) = [run for run in runs if run.info.run_name.startswith("cycle")]
    assert parent.data.tags[tracking.NOTE_TAG].startswith(f"**Cycle {summary['cycle_id']}: failed**")
    assert "the monitor broke" in parent.data.tags[tracking.NOTE_TAG]  # the run list says why
    executed = Path(summary["error"].split("see ")[-1].rstrip(")"))
    assert executed.name == "monitor.ipynb" and executed.exists()
    with lock.cycle_lock(home):  # the lock was released
        pass


def test_notebooks_run_beside_each_other_cycle_after_cycle(home, tmp_path):
    """A forced cycle runs its monitor notebook in a thread beside the retrain notebook: each needs an event
    loop of its own, in the second cycle of a process as in the first."""
    import nbformat

    from mnist_hitl.learning.loop.stages import run_notebook

    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, code in (("slow.ipynb", "import time\ntime.sleep(3)\nanswer = 1"), ("quick.ipynb", "answer = 2")):
        notebook = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("home = None", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code),
            ]  # fmt: skip
        )
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, folder / name)
    settings = home.replace(notebooks_override=folder)
    for round_ in range(2):  # the second round is the one a process that ran notebooks before meets
        beside = cycle._in_a_thread("quick", run_notebook, settings, "quick.ipynb", tmp_path / f"q{round_}.ipynb", {})
        run_notebook(settings, "slow.ipynb", tmp_path / f"s{round_}.ipynb", {})
        assert beside.result(timeout=120) == tmp_path / f"q{round_}.ipynb"
        assert "answer = 2" in (tmp_path / f"q{round_}.ipynb").read_text()


def test_the_monitor_beside_a_retraining_gives_way_to_it():
    import subprocess
    import sys

    code = "import os; from mnist_hitl.learning.loop import notebooks; notebooks.give_way({}); print(os.nice(0))"
    niceness = [int(subprocess.check_output([sys.executable, "-c", code.format(n)], text=True)) for n in (0, 10)]
    assert niceness[1] == niceness[0] + 10
    assert cycle.MONITOR_NICENESS_BESIDE > 0


def test_cron_for_the_cycle_interval():
    assert cron_for(60) == "0 * * * *"
    assert cron_for(15) == "*/15 * * * *"
    assert cron_for(120) == "0 */2 * * *"
    assert cron_for(45) is None  # cron's */45 would also fire on the hour: an interval then
    assert cron_for(90) is None
    with pytest.raises(ValueError):
        cron_for(0)
