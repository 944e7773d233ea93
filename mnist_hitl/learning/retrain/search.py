"""The Optuna search over learning rate, dropout and batch size, in one study that lasts.

By default the challenger starts from the deployed model's weights and is
fine-tuned on MNIST plus the users' drawings (``warm_start``). Keeping MNIST in
the mixture is what keeps the old skill; fine-tuning on the users' drawings
alone loses it.

The study (``STUDY_NAME``, in the shared database when there is one, else in
``$MNIST_HITL_HOME/optuna.sqlite``) outlives the cycles: a search continues it,
so the sampler starts from what earlier searches learned. A search runs only
when it is worth it (:func:`search_due`): the first time, and when
``MNIST_HITL_SEARCH_EVERY_LABELS`` labels came in since the last one; in
between, a cycle trains with the study's best parameters at once. The trials'
values of different searches were measured on different data: the sampler
treats them as one objective, a fair approximation while the data grow
a little at a time.

With ``MNIST_HITL_SEARCH_WORKERS`` > 0, ``mnist-hitl search-worker`` processes,
on this machine or others, run trials of the same search beside the retraining
(:mod:`~mnist_hitl.learning.retrain.search_request`, :mod:`~mnist_hitl.learning.retrain.search_worker`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_hitl.config import get_settings
from mnist_hitl.learning.retrain import search_request
from mnist_hitl.learning.retrain.labels import RetrainData
from mnist_hitl.learning.retrain.network import TrainParams, blend_with, evaluate, keras_module, train_model

STUDY_NAME = "mnist-hitl-retrain"
SEARCHED_THROUGH = "searched_through_label_id"  # the study's note of the newest label its last search used
LEARNING_RATES = (1e-4, 1e-3)
DROPOUTS = (0.1, 0.5)
BATCH_SIZES = (32, 64, 128)


def fit(
    x: np.ndarray, y: np.ndarray, params: TrainParams, initial_weights: list | None = None, start_share: float = 0.0
):
    """Train a CNN quietly, from scratch or from ``initial_weights`` (a fine-tune).

    A fine-tune keeps ``start_share`` of the weights it started from (``MNIST_HITL_CHAMPION_SHARE``;
    :func:`mnist_hitl.learning.retrain.network.blend_with`).
    """
    model = train_model(x, y, params, progress=False, initial_weights=initial_weights)
    return model if initial_weights is None else blend_with(model, initial_weights, start_share)


# the search -------------------------------------------------------------------------


@dataclass
class SearchResult:
    """The study and what it found."""

    study_name: str
    storage: str
    best_params: dict
    best_value: float
    trials: list[dict] = field(default_factory=list)  # number, value, params, seconds
    seconds: float = 0.0


def validation_split(
    data: RetrainData, seed: int = 0, mnist_fraction: float = 0.1, users_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices (mnist_fit, mnist_val, users_fit, users_val) for the trials, over every user's label.

    The search may validate on fresh labels too: it only picks three hyper-parameters, and most cycles
    run none (see :func:`search_due`); the judged models never train on what they judge.
    """
    rng = np.random.default_rng(seed)
    mnist = rng.permutation(len(data.y_mnist))
    n_val = max(1, int(len(mnist) * mnist_fraction))
    users = rng.permutation(len(data.users_train))
    n_users_val = round(len(users) * users_fraction) if len(users) >= 5 else 0
    return mnist[n_val:], mnist[:n_val], users[n_users_val:], users[:n_users_val]


def trial_arrays(data: RetrainData, seed: int = 0) -> tuple[np.ndarray, ...]:
    """What every trial trains and scores on: (x_fit, y_fit, x_mnist_val, y_mnist_val, x_users_val, y_users_val)."""
    mnist_fit, mnist_val, users_fit, users_val = validation_split(data, seed)
    x_fit, y_fit = data.training_set(mnist_fit, users_fit)
    users = data.users_train
    return x_fit, y_fit, data.x_mnist[mnist_val], data.y_mnist[mnist_val], users.x[users_val], users.y[users_val]


def make_objective(
    data: RetrainData,
    epochs_per_trial: int,
    seed: int = 0,
    initial_weights: list | None = None,
    on_trial: Callable[[dict], None] | None = None,
) -> Callable:
    """The Optuna objective of a search: one training, its validation accuracy (see :func:`run_search`).

    Each trial notes the process that ran it (user attr ``worker``, ``host:pid``).
    """
    x_fit, y_fit, x_mval, y_mval, x_uval, y_uval = trial_arrays(data, seed)
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial) -> float:
        trial.set_user_attr("worker", worker)
        params = TrainParams(
            epochs=epochs_per_trial,
            batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
            learning_rate=trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
            dropout=trial.suggest_float("dropout", *DROPOUTS),
            seed=seed,
        )
        start = time.perf_counter()
        network = fit(x_fit, y_fit, params, initial_weights)
        mnist_acc = evaluate(network, x_mval, y_mval)
        users_acc = evaluate(network, x_uval, y_uval) if len(y_uval) else float("nan")
        value = mnist_acc if np.isnan(users_acc) else (mnist_acc + users_acc) / 2
        trial.set_user_attr("mnist_val_accuracy", mnist_acc)
        trial.set_user_attr("users_val_accuracy", None if np.isnan(users_acc) else users_acc)
        if on_trial is not None:
            on_trial(
                {
                    "number": trial.number,
                    "value": value,
                    "params": dict(trial.params),
                    "mnist_val_accuracy": mnist_acc,
                    "users_val_accuracy": users_acc,
                    "seconds": round(time.perf_counter() - start, 2),
                    "worker": worker,
                }
            )
        keras_module().backend.clear_session()
        return value

    return objective


def run_search(
    data: RetrainData,
    storage: str,
    study_name: str,
    n_trials: int = 8,
    epochs_per_trial: int = 1,
    seed: int = 0,
    initial_weights: list | None = None,
    on_trial: Callable[[dict], None] | None = None,
    through_label_id: int = 0,
    workers: int | None = None,
    wait_seconds: float = search_request.WAIT_SECONDS,
) -> SearchResult:
    """An Optuna study maximising validation accuracy over learning rate, dropout and batch size.

    Each trial trains ``epochs_per_trial`` epochs (from ``initial_weights`` when
    given) on MNIST and the users' training drawings less a validation part,
    and scores the mean of the accuracies on the MNIST and users' validation
    parts (MNIST alone when there are too few users' drawings).

    With search workers (``MNIST_HITL_SEARCH_WORKERS`` > 0), the search is asked for in the study
    and ``mnist-hitl search-worker`` processes run trials beside this one; this process runs trials
    too, then waits until exactly ``n_trials`` new trials are complete (:mod:`search_request`).

    Args:
        data: the split data.
        storage: Optuna storage URL (``sqlite:///...`` or the shared database's).
        study_name: a new name per retraining (an existing study is continued).
        on_trial: called with each finished trial's record (number, value, params, seconds, worker).
        through_label_id: the newest label of the data, noted in the study (see :func:`search_due`).
        workers: search workers beside this process (default ``MNIST_HITL_SEARCH_WORKERS``); 0: alone.
        wait_seconds: how long to wait for trials running on workers before failing.

    Raises:
        search_request.SearchTimeout: workers' trials did not finish within ``wait_seconds``.
    """
    records: list[dict] = []

    def note(record: dict) -> None:
        records.append(record)
        if on_trial is not None:
            on_trial(record)

    objective = make_objective(data, epochs_per_trial, seed, initial_weights, note)
    start = time.perf_counter()
    shared_storage = search_request.open_storage(storage) if _shared(workers) else None
    study = _open_study(shared_storage or storage, study_name, seed)
    if shared_storage is None:
        study.optimize(objective, n_trials=n_trials)
    else:
        request = _search_request(study, data, n_trials, epochs_per_trial, seed)
        inputs = (initial_weights, data.pseudo)
        records = _search_with_workers(
            shared_storage, study, objective, request, inputs, wait_seconds, records, on_trial
        )
    study.set_user_attr(SEARCHED_THROUGH, int(through_label_id))
    seconds = round(time.perf_counter() - start, 2)
    return SearchResult(study_name, storage, dict(study.best_params), float(study.best_value), records, seconds)


def _shared(workers: int | None) -> bool:
    """Whether search workers run trials beside this process (default ``MNIST_HITL_SEARCH_WORKERS``)."""
    return (get_settings().search_workers if workers is None else workers) > 0


def _open_study(storage, study_name: str, seed: int):
    """The lasting study, created on first use, sampled by a seeded TPE sampler."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )


def _search_request(
    study, data: RetrainData, n_trials: int, epochs_per_trial: int, seed: int
) -> search_request.SearchRequest:
    """What the workers need to rebuild the trials' data and run trials of this search."""
    return search_request.SearchRequest(
        len(study.trials),
        n_trials,
        epochs_per_trial,
        seed,
        data.through_label_id,
        data.champion_through,
        data.oversample,
        search_request.fingerprint(trial_arrays(data, seed)),
    )


def _search_with_workers(
    storage,
    study,
    objective: Callable,
    request: search_request.SearchRequest,
    inputs: tuple[list | None, object],
    wait_seconds: float,
    mine: list[dict],
    on_trial: Callable[[dict], None] | None,
) -> list[dict]:
    """Ask for the search in the study, run trials here until the quota is met, and return every trial's record.

    Args:
        inputs: what the workers cannot rebuild: the champion's weights and the pseudo-labels.
        mine: the records of the trials run here, already told to ``on_trial``; it hears of the workers' now.
    """
    search_request.publish(storage, study, request, *inputs)
    search_request.finish(study, objective, request, wait_seconds)
    search_request.clear_inputs(storage, study)
    numbers = {record["number"] for record in mine}
    records = search_request.search_records(study, request)
    for record in records:
        if on_trial is not None and record["number"] not in numbers:
            on_trial(record)  # a worker's trial
    return records


def search_due(storage: str, study_name: str, through_label_id: int, every_labels: int) -> tuple[bool, str]:
    """Whether a retraining should search now, and why: the study has no trial yet, or enough new labels came."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return True, "no search has run yet: a full search"
    if not [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]:
        return True, "the study has no finished trial yet: a full search"
    new = int(through_label_id) - int(study.user_attrs.get(SEARCHED_THROUGH, 0))
    if new >= every_labels:
        return True, f"{new} labels since the last search (MNIST_HITL_SEARCH_EVERY_LABELS={every_labels}): a search"
    return False, (
        f"{new} labels since the last search (fewer than MNIST_HITL_SEARCH_EVERY_LABELS={every_labels}): "
        "training with the study's best parameters, no search"
    )


def should_search(
    storage: str, study_name: str, through_label_id: int, every_labels: int, asked: bool | None = None
) -> tuple[bool, str]:
    """:func:`search_due`, unless ``asked`` says yes or no (the notebook's ``search_now``)."""
    due, why = search_due(storage, study_name, through_label_id, every_labels)
    if asked is None:
        return due, why
    if not asked and why.endswith("a full search"):
        return True, f"{why} (search_now=False, but there is nothing to reuse yet)"
    return bool(asked), f"search_now={asked}: " + ("a search" if asked else "no search, the study's best parameters")


def reuse_best(storage: str, study_name: str) -> SearchResult:
    """The study's best so far, as a search that ran no trial."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    return SearchResult(study_name, storage, dict(study.best_params), float(study.best_value), [], 0.0)


def best_train_params(search: SearchResult, epochs: int, seed: int = 0) -> TrainParams:
    """The final training's parameters: the study's best, for ``epochs`` epochs."""
    best = search.best_params
    return TrainParams(
        epochs=epochs,
        batch_size=int(best["batch_size"]),
        learning_rate=float(best["learning_rate"]),
        dropout=float(best["dropout"]),
        seed=seed,
    )


def load_study(search: SearchResult):
    import optuna

    return optuna.load_study(study_name=search.study_name, storage=search.storage)


def trials_frame(search: SearchResult):
    """The study's trials as a table (the CSV logged with the run)."""
    return load_study(search).trials_dataframe()


def plot_search(search: SearchResult, output_dir: Path) -> dict[str, Path]:
    """The optimisation history and parameter importances as PNG files; returns their paths."""
    import warnings

    import matplotlib.pyplot as plt  # optuna draws with pyplot
    from optuna.visualization import matplotlib as optuna_plots

    study = load_study(search)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        for name, plot in (
            ("optuna_history", optuna_plots.plot_optimization_history),
            ("optuna_importances", optuna_plots.plot_param_importances),
        ):
            complete = [t for t in study.trials if t.value is not None]
            if name == "optuna_importances" and len(complete) < 2:
                continue  # importances need at least two finished trials
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):
                continue  # e.g. every trial drew the same parameters: no importance to show
            figure = axes.figure
            figure.set_size_inches(7, 4)
            figure.tight_layout()
            paths[name] = output_dir / f"{name}.png"
            figure.savefig(paths[name], dpi=90)
            plt.close(figure)
    return paths


def search_summary(search: SearchResult) -> dict:
    return {**asdict(search), "n_trials": len(search.trials)}
