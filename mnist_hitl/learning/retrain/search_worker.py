"""``mnist-hitl search-worker``: run trials of the retraining's searches in another process, on any machine.

A worker needs ``MNIST_HITL_DATABASE_URL`` (the store and the study live there) and a home of its
own, nothing else. It waits for a search to be asked for (:mod:`~mnist_hitl.learning.retrain.search_request`),
builds the trials' data the way the retraining did: MNIST as its settings say, the users' labels from
the store up to the request's label, the champion's weights and pseudo-labels from the request itself;
it refuses a search whose data it cannot reproduce (their fingerprints differ), then runs trials until
the search's quota is met and waits for the next search. Without a shared database (SQLite) it runs
on the retraining's machine, with the same home.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain import search_request
from mnist_hitl.learning.retrain.labels import RetrainData, retraining_labels, training_data
from mnist_hitl.learning.retrain.search import STUDY_NAME, make_objective, trial_arrays
from mnist_hitl.learning.retrain.search_request import SearchRequest
from mnist_hitl.store import Store, open_store


class SearchWorkerError(RuntimeError):
    """This worker cannot run the search's trials: its data are not the retraining's."""


def serve_searches(
    settings: Settings,
    once: bool = False,
    poll_seconds: float = 10.0,
    study_name: str | None = None,
    say: Callable[[str], None] = print,
) -> list[int]:
    """Run trials of every search asked for in the study, as they come.

    Args:
        once: return after the first search this worker ran trials for.
        poll_seconds: how often to look for a search.
        study_name: default: the retraining's lasting study.
        say: where progress lines go.

    Returns:
        The numbers of the trials this worker ran (with ``once``; otherwise it runs until stopped).

    Raises:
        SearchWorkerError: the search's data differ from the ones this worker can load.
    """
    import optuna

    from mnist_hitl.learning.retrain.network import keras_module

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    keras_module()  # TensorFlow's import (seconds) before the first search, not inside it
    storage = search_request.open_storage(settings.optuna_storage)
    study_name = study_name or STUDY_NAME
    ran: list[int] = []
    prepared: tuple[SearchRequest, Callable | None] | None = None
    say(f"search worker: waiting for a search of study {study_name!r}")
    with open_store(settings) as store:
        while True:
            study = _load_study(storage, study_name)
            request = None if study is None else search_request.current_request(study)
            if request is not None and search_request.quota_open(study, request):
                if prepared is None or prepared[0] != request:
                    prepared = (request, trial_objective(settings, store, storage, study, request, ran.append))
                if prepared[1] is not None:
                    search_request.run_trials(study, prepared[1], request)
                    say(f"search worker: search from trial #{request.first_number} done, {len(ran)} trial(s) run here")
                    if once:
                        return ran
            time.sleep(poll_seconds)


def _load_study(storage, study_name: str):
    """The study, with a sampler of its own (not seeded: workers must not all draw the same parameters)."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.TPESampler())
    except KeyError:
        return None  # no search was ever asked for


def trial_objective(
    settings: Settings, store: Store, storage, study, request: SearchRequest, on_trial: Callable[[int], None]
) -> Callable | None:
    """The search's objective on the data the request describes (None: the search just ended).

    ``on_trial`` gets the number of each trial run here.

    Raises:
        SearchWorkerError: the data loaded here are not the retraining's.
    """
    inputs = search_request.inputs(storage, study)
    if inputs is None:
        return None
    weights, pseudo = inputs
    data = request_data(settings, store, request)
    data.pseudo = pseudo
    if search_request.fingerprint(trial_arrays(data, request.seed)) != request.fingerprint:
        raise SearchWorkerError(
            f"this worker's data for the search from trial {request.first_number} differ from the retraining's:"
            " it needs the same store (MNIST_HITL_DATABASE_URL) and MNIST (MNIST_HITL_MNIST_SOURCE, MNIST_HITL_HOLDOUT)"
        )
    return make_objective(
        data, request.epochs_per_trial, request.seed, weights, lambda record: on_trial(record["number"])
    )


def request_data(settings: Settings, store: Store, request: SearchRequest) -> RetrainData:
    """MNIST and the users' labels up to the request's label, the champion's seen ones first (no pseudo-labels)."""
    from mnist_hitl.learning.data import load_mnist

    users, held = retraining_labels(store, request.through_label_id)
    return training_data(
        settings,
        load_mnist(settings),
        users,
        request.oversample,
        request.through_label_id,
        request.champion_through,
        held_out=held,
    )
