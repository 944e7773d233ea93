"""Retraining data and the Optuna search over learning rate, dropout and batch size.

The training data is the MNIST train split plus the users' labelled drawings
(the latest label of each prediction wins), the drawings repeated
``oversample`` times so a few hundred of them weigh against thousands of MNIST
digits. A stable slice of the users' labels (chosen by a hash of the
prediction id, so a drawing is in it forever) is never trained on: promotion
compares challenger and champion on it.

By default the challenger starts from the deployed model's weights and is
fine-tuned on that mixture (``warm_start``). Measured on the replay benchmark's
shifted population: 3 warm epochs (8 s) reach the same lift as 15 epochs from
scratch (64 s) and lose less on the MNIST holdout. Keeping MNIST in the mixture
is what keeps the old skill; fine-tuning on the users' drawings alone loses it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.model import TrainParams
from mnist_hitl.preprocess import decode_image
from mnist_hitl.store import Store

LEARNING_RATES = (1e-4, 1e-3)
DROPOUTS = (0.1, 0.5)
BATCH_SIZES = (32, 64, 128)


def in_users_holdout(prediction_id: int, fraction: float) -> bool:
    """Whether a labelled drawing belongs to the held-out slice (stable for a given fraction)."""
    digest = hashlib.sha256(f"mnist-hitl-holdout:{int(prediction_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class UserLabels:
    """Users' labelled drawings: 28x28 uint8 pictures, their labels and ids."""

    x: np.ndarray
    y: np.ndarray
    prediction_ids: np.ndarray
    label_ids: np.ndarray
    predicted: np.ndarray  # what the model said when the drawing was made

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> UserLabels:
        return UserLabels(self.x[mask], self.y[mask], self.prediction_ids[mask], self.label_ids[mask],
                          self.predicted[mask])


def user_labels(store: Store, since_label_id: int = 0, through_label_id: int | None = None) -> UserLabels:
    """The labelled drawings whose latest label id is in (since, through]."""
    pairs = [(p, label) for p, label in store.labelled_predictions(since_label_id)
             if through_label_id is None or label.id <= through_label_id]
    if not pairs:
        empty = np.zeros(0, dtype=np.int64)
        return UserLabels(np.zeros((0, 28, 28), dtype=np.uint8), empty, empty, empty, empty)
    x = np.stack([_as_digit(decode_image(p.png)) for p, _ in pairs])
    return UserLabels(
        x,
        np.array([label.label for _, label in pairs], dtype=np.int64),
        np.array([p.id for p, _ in pairs], dtype=np.int64),
        np.array([label.id for _, label in pairs], dtype=np.int64),
        np.array([p.predicted_label for p, _ in pairs], dtype=np.int64),
    )


def _as_digit(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim == 3:
        picture = picture[..., 0]
    return picture.astype(np.uint8)


@dataclass
class RetrainData:
    """Everything a retraining needs, split once."""

    x_mnist: np.ndarray
    y_mnist: np.ndarray
    x_mnist_holdout: np.ndarray
    y_mnist_holdout: np.ndarray
    users_train: UserLabels
    users_heldout: UserLabels
    oversample: int
    through_label_id: int

    def training_set(self, mnist_index: np.ndarray | None = None,
                     users_index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """MNIST plus the users' training drawings repeated ``oversample`` times."""
        xm = self.x_mnist if mnist_index is None else self.x_mnist[mnist_index]
        ym = self.y_mnist if mnist_index is None else self.y_mnist[mnist_index]
        xu = self.users_train.x if users_index is None else self.users_train.x[users_index]
        yu = self.users_train.y if users_index is None else self.users_train.y[users_index]
        repeat = max(1, self.oversample)
        x = np.concatenate([xm, np.repeat(xu, repeat, axis=0)]) if len(xu) else xm
        y = np.concatenate([ym, np.repeat(yu, repeat)]) if len(yu) else ym
        return x, y

    def sizes(self) -> dict[str, int]:
        return {"mnist_train": len(self.y_mnist), "mnist_holdout": len(self.y_mnist_holdout),
                "users_train": len(self.users_train), "users_heldout": len(self.users_heldout),
                "oversample": self.oversample, "through_label_id": self.through_label_id}


def retrain_data(settings: Settings, through_label_id: int | None = None, oversample: int = 5,
                 users_holdout_fraction: float = 0.25) -> RetrainData:
    """MNIST and all users' labels up to ``through_label_id``, split into training and held-out slice."""
    from mnist_hitl.data import load_mnist

    dataset = load_mnist(settings)
    with Store(settings.db_path) as store:
        labels = user_labels(store, 0, through_label_id)
    held = np.array([in_users_holdout(i, users_holdout_fraction) for i in labels.prediction_ids], dtype=bool)
    through = int(labels.label_ids.max()) if len(labels) else int(through_label_id or 0)
    return RetrainData(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test,
                       labels.subset(~held), labels.subset(held), oversample,
                       max(through, int(through_label_id or 0)))


# training ---------------------------------------------------------------------------

def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def fit(x: np.ndarray, y: np.ndarray, params: TrainParams, initial_weights: list | None = None):
    """Train a CNN quietly, from scratch or from ``initial_weights`` (a fine-tune)."""
    from mnist_hitl import model as model_lib

    return model_lib.train_model(x, y, params, progress=False, initial_weights=initial_weights)


def accuracy(network, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a Keras model; NaN on an empty set."""
    from mnist_hitl.model import evaluate

    return evaluate(network, x, y)


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


def validation_split(data: RetrainData, seed: int = 0, mnist_fraction: float = 0.1,
                     users_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices (mnist_fit, mnist_val, users_fit, users_val) for the trials (the held-out slice is untouched)."""
    rng = np.random.default_rng(seed)
    mnist = rng.permutation(len(data.y_mnist))
    n_val = max(1, int(len(mnist) * mnist_fraction))
    users = rng.permutation(len(data.users_train))
    n_users_val = round(len(users) * users_fraction) if len(users) >= 5 else 0
    return mnist[n_val:], mnist[:n_val], users[n_users_val:], users[:n_users_val]


def run_search(data: RetrainData, storage: str, study_name: str, n_trials: int = 8, epochs_per_trial: int = 1,
               seed: int = 0, initial_weights: list | None = None,
               on_trial: Callable[[dict], None] | None = None) -> SearchResult:
    """An Optuna study maximising validation accuracy over learning rate, dropout and batch size.

    Each trial trains ``epochs_per_trial`` epochs (from ``initial_weights`` when
    given) on MNIST and the users' training drawings less a validation part,
    and scores the mean of the accuracies on the MNIST and users' validation
    parts (MNIST alone when there are too few users' drawings).

    Args:
        data: the split data.
        storage: Optuna storage URL (``sqlite:///...``).
        study_name: a new name per retraining (an existing study is continued).
        on_trial: called with each finished trial's record (number, value, params, seconds).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    mnist_fit, mnist_val, users_fit, users_val = validation_split(data, seed)
    x_fit, y_fit = data.training_set(mnist_fit, users_fit)
    x_mval, y_mval = data.x_mnist[mnist_val], data.y_mnist[mnist_val]
    x_uval, y_uval = data.users_train.x[users_val], data.users_train.y[users_val]
    records: list[dict] = []

    def objective(trial: optuna.Trial) -> float:
        params = TrainParams(
            epochs=epochs_per_trial,
            batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZES)),
            learning_rate=trial.suggest_float("learning_rate", *LEARNING_RATES, log=True),
            dropout=trial.suggest_float("dropout", *DROPOUTS),
            seed=seed,
        )
        start = time.perf_counter()
        network = fit(x_fit, y_fit, params, initial_weights)
        mnist_acc = accuracy(network, x_mval, y_mval)
        users_acc = accuracy(network, x_uval, y_uval) if len(y_uval) else float("nan")
        value = mnist_acc if np.isnan(users_acc) else (mnist_acc + users_acc) / 2
        trial.set_user_attr("mnist_val_accuracy", mnist_acc)
        trial.set_user_attr("users_val_accuracy", None if np.isnan(users_acc) else users_acc)
        record = {"number": trial.number, "value": value, "params": dict(trial.params),
                  "mnist_val_accuracy": mnist_acc, "users_val_accuracy": users_acc,
                  "seconds": round(time.perf_counter() - start, 2)}
        records.append(record)
        if on_trial is not None:
            on_trial(record)
        _keras().backend.clear_session()
        return value

    start = time.perf_counter()
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    study.optimize(objective, n_trials=n_trials)
    return SearchResult(study_name, storage, dict(study.best_params), float(study.best_value), records,
                        round(time.perf_counter() - start, 2))


def best_train_params(search: SearchResult, epochs: int, seed: int = 0) -> TrainParams:
    """The final training's parameters: the study's best, for ``epochs`` epochs."""
    best = search.best_params
    return TrainParams(epochs=epochs, batch_size=int(best["batch_size"]), learning_rate=float(best["learning_rate"]),
                       dropout=float(best["dropout"]), seed=seed)


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
        for name, plot in (("optuna_history", optuna_plots.plot_optimization_history),
                           ("optuna_importances", optuna_plots.plot_param_importances)):
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
