"""One search, its trials run by several processes at once: the request, the quota, the wait.

The retraining asks for a search by noting a :class:`SearchRequest` in the study's user attrs, and
what only it has (the champion's weights the trials start from, its pseudo-labels) in one compressed
system attr, cleared when the search is done. Every process that runs trials (the retraining, any
``mnist-hitl search-worker``) opens the same study in Optuna's RDB storage and runs trials until the
search's quota is met. Optuna does the work; the rules on top of it:

- **Exactly** ``n_trials`` **complete.** Before each trial a process counts the search's COMPLETE and
  RUNNING trials and stops when they fill the quota (Optuna's ``MaxTrialsCallback`` counts after a
  trial; counting the RUNNING ones too is what keeps workers from overshooting). Two processes can
  pass that check together, so a trial, once started, gives way (:class:`SurplusTrial`: FAIL, user attr
  ``surplus``, nothing trained) when the complete trials and the running ones numbered before it
  already fill the quota. Optuna numbers trials under a lock on the study row: of two racing trials
  the later one always yields, and no trial runs twice.
- **A dead worker blocks nothing.** Running trials beat a heartbeat (``RDBStorage(heartbeat_interval,
  grace_period)``); a trial whose beat stopped is failed by the next process that looks
  (``fail_stale_trials``), which reopens the quota; the retraining runs the missing trials itself if no
  worker does, and waits for other workers' running trials at most ``wait_seconds``.
- **A search's trials are those numbered from** ``first_number`` **on**: a trial left RUNNING by a
  process killed before heartbeats were on would otherwise count forever. A request replaced by a
  newer one is over for everyone.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnist_hitl.learning.retrain.labels import UserLabels

REQUEST = "search_request"  # the study's user attr: the search asked for
INPUTS = "mnist_hitl:search_inputs"  # the study's system attr: the request's start weights and pseudo-labels
HEARTBEAT_SECONDS = 10  # a running trial's beat; read when a storage is opened
GRACE_SECONDS = 60  # a trial whose beat stopped this long ago is failed
WAIT_SECONDS = 1800.0  # how long the retraining waits for trials running elsewhere
POLL_SECONDS = 2.0


class SurplusTrial(Exception):
    """A trial that started when the search's quota was already filled: it gives way before training."""


class SearchTimeout(RuntimeError):
    """Trials of the search running on other workers did not finish in time."""


@dataclass(frozen=True)
class SearchRequest:
    """A search: ``n_trials`` COMPLETE trials numbered from ``first_number`` on, and what their data are."""

    first_number: int
    n_trials: int
    epochs_per_trial: int
    seed: int
    through_label_id: int  # the users' labels up to this one
    champion_through: int  # the labels the champion saw come first (the order the validation split draws from)
    oversample: int
    fingerprint: str  # of the trials' arrays: a worker whose data differ refuses the search


def open_storage(url: str):
    """Optuna's RDB storage at ``url``, with heartbeats (``HEARTBEAT_SECONDS``, ``GRACE_SECONDS``)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)  # a new home
    engine = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are, since Optuna 2.9
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS
        )


def fingerprint(arrays) -> str:
    """A short digest of arrays' shapes, types and values."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


# the request in the study ----------------------------------------------------------------


def publish(storage, study, request: SearchRequest, initial_weights: list | None, pseudo: UserLabels | None) -> None:
    """Ask for a search: its inputs first, then the request workers look for."""
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.set_study_system_attr(study_id, INPUTS, _pack(initial_weights, pseudo))
    study.set_user_attr(REQUEST, asdict(request))


def current_request(study) -> SearchRequest | None:
    """The search the study was last asked for (None: never)."""
    noted = study.user_attrs.get(REQUEST)
    return None if noted is None else SearchRequest(**noted)


def inputs(storage, study) -> tuple[list | None, UserLabels | None] | None:
    """The current request's start weights (None: from scratch) and pseudo-labels; None once the search is over."""
    packed = storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name)).get(INPUTS)
    return None if packed is None else _unpack(packed)


def clear_inputs(storage, study) -> None:
    """Drop the finished search's inputs from the study (a megabyte or so)."""
    storage.set_study_system_attr(storage.get_study_id_from_name(study.study_name), INPUTS, None)


def _pack(weights: list | None, pseudo: UserLabels | None) -> str:
    arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(weights or [])}
    if pseudo is not None and len(pseudo):
        arrays.update(pseudo_x=pseudo.x, pseudo_y=pseudo.y, pseudo_ids=pseudo.prediction_ids)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, weight_count=np.array(-1 if weights is None else len(weights)), **arrays)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _unpack(packed: str) -> tuple[list | None, UserLabels | None]:
    with np.load(io.BytesIO(base64.b64decode(packed))) as npz:
        count = int(npz["weight_count"])
        weights = None if count < 0 else [npz[f"w{i}"] for i in range(count)]
        pseudo = None
        if "pseudo_y" in npz:
            digits = npz["pseudo_y"]
            pseudo = UserLabels(npz["pseudo_x"], digits, npz["pseudo_ids"], np.zeros(len(digits), np.int64), digits)
    return weights, pseudo


# the quota ------------------------------------------------------------------------------


def progress(study, request: SearchRequest, before: int | None = None) -> tuple[int, int]:
    """The search's COMPLETE trials and RUNNING ones (only those numbered below ``before``, if given)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    ours = [t for t in trials if t.number >= request.first_number]
    complete = sum(t.state == TrialState.COMPLETE for t in ours)
    running = sum(t.state == TrialState.RUNNING and (before is None or t.number < before) for t in ours)
    return complete, running


def quota_open(study, request: SearchRequest) -> bool:
    """Whether the search still needs a trial started: stale trials failed first, then its trials counted."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return current_request(study) == request and sum(progress(study, request)) < request.n_trials


def run_trials(study, objective: Callable, request: SearchRequest) -> None:
    """Run the search's trials in this process until its quota is filled, here and elsewhere."""
    if not quota_open(study, request):
        return

    def give_way_when_full(trial) -> float:
        if sum(progress(study, request, before=trial.number)) >= request.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number} gives way: the search's {request.n_trials} trials are taken")
        return objective(trial)

    def stop_when_full(study, trial) -> None:
        if not quota_open(study, request):
            study.stop()

    study.optimize(give_way_when_full, callbacks=[stop_when_full], catch=(SurplusTrial,))


def finish(study, objective: Callable, request: SearchRequest, wait_seconds: float = WAIT_SECONDS) -> None:
    """Run trials until the quota is filled, then wait until the trials running elsewhere complete.

    Raises:
        SearchTimeout: other workers' trials were still running ``wait_seconds`` after this process
            had nothing left to run.
    """
    waiting_since = None
    while True:
        run_trials(study, objective, request)
        complete, running = progress(study, request)
        if complete >= request.n_trials:
            return
        waiting_since = waiting_since or time.monotonic()
        if time.monotonic() - waiting_since > wait_seconds:
            raise SearchTimeout(
                f"the search waited {wait_seconds:.0f} s for {running} trial(s) still running on other workers"
                f" ({complete} of {request.n_trials} complete; a dead worker's trial fails after {GRACE_SECONDS} s)"
            )
        time.sleep(POLL_SECONDS)


def search_records(study, request: SearchRequest) -> list[dict]:
    """The search's complete trials, whoever ran them, as :func:`search.run_search` records them."""
    from optuna.trial import TrialState

    return [
        {
            "number": t.number,
            "value": t.value,
            "params": dict(t.params),
            "mnist_val_accuracy": t.user_attrs.get("mnist_val_accuracy"),
            "users_val_accuracy": _nan_if_none(t.user_attrs.get("users_val_accuracy")),
            "seconds": round(t.duration.total_seconds(), 2),
            "worker": t.user_attrs.get("worker"),
        }
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.number >= request.first_number
    ]


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value
