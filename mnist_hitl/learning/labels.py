"""The users' labels and the data a retraining learns from.

The training data is the MNIST train split plus the users' labelled drawings
(the latest label of each prediction wins), the drawings repeated
``oversample`` times so a few hundred of them weigh against thousands of MNIST
digits. A stable slice of the users' labels (chosen by a hash of the
prediction id, so a drawing is in it forever) is never trained on: promotion
compares challenger and champion on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.preprocess import decode_image
from mnist_hitl.store import Store


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
        return UserLabels(
            self.x[mask], self.y[mask], self.prediction_ids[mask], self.label_ids[mask], self.predicted[mask]
        )


def user_labels(store: Store, since_label_id: int = 0, through_label_id: int | None = None) -> UserLabels:
    """The labelled drawings whose latest label id is in (since, through]."""
    pairs = [
        (p, label)
        for p, label in store.labelled_predictions(since_label_id)
        if through_label_id is None or label.id <= through_label_id
    ]
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

    def training_set(
        self, mnist_index: np.ndarray | None = None, users_index: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
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
        return {
            "mnist_train": len(self.y_mnist),
            "mnist_holdout": len(self.y_mnist_holdout),
            "users_train": len(self.users_train),
            "users_heldout": len(self.users_heldout),
            "oversample": self.oversample,
            "through_label_id": self.through_label_id,
        }


def retrain_data(
    settings: Settings, through_label_id: int | None = None, oversample: int = 5, users_holdout_fraction: float = 0.25
) -> RetrainData:
    """MNIST and all users' labels up to ``through_label_id``, split into training and held-out slice."""
    from mnist_hitl.data import load_mnist

    dataset = load_mnist(settings)
    with Store(settings.db_path) as store:
        labels = user_labels(store, 0, through_label_id)
    held = np.array([in_users_holdout(i, users_holdout_fraction) for i in labels.prediction_ids], dtype=bool)
    through = int(labels.label_ids.max()) if len(labels) else int(through_label_id or 0)
    return RetrainData(
        dataset.x_train,
        dataset.y_train,
        dataset.x_test,
        dataset.y_test,
        labels.subset(~held),
        labels.subset(held),
        oversample,
        max(through, int(through_label_id or 0)),
    )
