"""The users' labels and the data a retraining learns from.

The training data is a replay of the MNIST train split (``MNIST_HITL_REPLAY`` digits drawn
once per retraining, all of them when 0) plus the users' labelled drawings (the latest label of
each prediction wins). The drawings make a fixed share of the examples (``MNIST_HITL_LABEL_SHARE``):
each appears as itself and as variants of it (:mod:`~mnist_hitl.learning.retrain.variants`), as
many as that share asks (and at least ``oversample``), so 25 labels weigh as much as 500; the replay
grows when hundreds of labels would outnumber it. With the share at 0 they are repeated ``oversample``
times instead. Every label trains the deployed model eventually; a challenger is judged only on the
labels the champion never saw (``fresh``: labelled after it was trained), each by a model of the
same recipe that did not train on it either
(a cross-fit over judging folds, see :mod:`mnist_hitl.learning.retrain.crossfit`).

Some labels are held out of both until a person has settled them (:func:`retraining_labels`): a
disputed drawing, whose reviewers gave different digits, until an adjudication decides it
(:mod:`mnist_hitl.workbench.adjudication`); a suspect label the previous cycle flagged, until
someone labels the drawing again (:mod:`mnist_hitl.workbench.suspects`). Both are read as of the
retraining's newest label, so its search workers leave out the same drawings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mnist_hitl.config import Settings
from mnist_hitl.learning.retrain.variants import copies_for_share, variants
from mnist_hitl.preprocess import decode_image
from mnist_hitl.store import Store
from mnist_hitl.workbench.adjudication import disputes
from mnist_hitl.workbench.suspects import stored_suspects, unreviewed_suspects


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


@dataclass(frozen=True)
class HeldOut:
    """The labelled drawings a retraining leaves out of training and judging, by prediction id."""

    disputed: frozenset[int] = frozenset()  # reviewers disagree and no adjudication decided it
    suspects: frozenset[int] = frozenset()  # flagged by the previous cycle, nobody has looked again

    def __len__(self) -> int:
        return len(self.disputed) + len(self.suspects)


def to_hold_out(store: Store, through_label_id: int | None = None) -> HeldOut:
    """The drawings to hold out as of label ``through_label_id`` (None: the newest): the disputed ones, and the
    stored suspects' drawings with no label since the flagged one (a drawing both disputed and suspect counts
    as disputed)."""
    history = [label for label in store.labels() if through_label_id is None or label.id <= through_label_id]
    disputed = set(disputes(history))
    stored = stored_suspects(store)
    suspects = unreviewed_suspects(stored[0], history) - disputed if stored else set()
    return HeldOut(frozenset(disputed), frozenset(suspects))


def retraining_labels(store: Store, through_label_id: int | None = None) -> tuple[UserLabels, HeldOut]:
    """Every labelled drawing up to ``through_label_id`` that may train and judge, and those held out of both."""
    return without_held_out(store, user_labels(store, 0, through_label_id), through_label_id)


def without_held_out(store: Store, labels: UserLabels, through_label_id: int | None) -> tuple[UserLabels, HeldOut]:
    """``labels`` less the drawings :func:`to_hold_out` as of ``through_label_id``, and those held out (the drawings
    among ``labels`` only)."""
    if not len(labels):
        return labels, HeldOut()
    candidates = to_hold_out(store, through_label_id)
    present = set(labels.prediction_ids.tolist())
    held = HeldOut(candidates.disputed & present, candidates.suspects & present)
    if not len(held):
        return labels, held
    return labels.subset(~np.isin(labels.prediction_ids, sorted(held.disputed | held.suspects))), held


def _as_digit(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim == 3:
        picture = picture[..., 0]
    return picture.astype(np.uint8)


@dataclass
class RetrainData:
    """Everything a retraining needs, split once.

    ``users_seen`` are the labels the deployed champion was trained with; ``users_fresh`` the
    ones it never saw (labelled after its training), each in one of ``folds`` judging folds by a
    hash of its prediction id. ``pseudo`` are unlabelled drawings the champion reads with high
    confidence, labelled with its answer: they train, less weighted, and never judge.
    """

    x_mnist: np.ndarray
    y_mnist: np.ndarray
    x_mnist_holdout: np.ndarray
    y_mnist_holdout: np.ndarray
    users_seen: UserLabels
    users_fresh: UserLabels
    oversample: int
    through_label_id: int
    champion_through: int = 0
    fold_count: int = 2
    pseudo: UserLabels | None = None
    judged_fold: int | None = None  # one fold judges (the quick way, see crossfit.judge); None: every fold does
    label_share: float = 0.0  # people's drawings' share of the training examples; 0: ``oversample`` repeats
    seed: int = 0  # the variants' seed
    held_out: HeldOut = field(default_factory=HeldOut)  # labelled drawings left out of training and judging

    @cached_property
    def copies(self) -> int:
        """How many times each person's drawing appears in a training set (itself, then its variants)."""
        if self.label_share <= 0:
            return max(1, self.oversample)
        others = len(self.y_mnist) + (0 if self.pseudo is None else len(self.pseudo))
        share = copies_for_share(len(self.users_seen) + len(self.users_fresh), others, self.label_share)
        return max(share, self.oversample)  # many labels still weigh as they did: the share is a least weight

    @cached_property
    def _variants(self) -> np.ndarray:
        """``copies - 1`` variants of each of :attr:`users_train`'s drawings, made once (n, copies - 1, 28, 28)."""
        if self.label_share <= 0:
            return np.zeros((len(self.users_train), 0, 28, 28), dtype=np.uint8)
        return variants(self.users_train.x, self.copies - 1, self.seed)

    @property
    def users_train(self) -> UserLabels:
        """Every user's label: what the final model trains on."""
        return concat(self.users_seen, self.users_fresh)

    @property
    def users_heldout(self) -> UserLabels:
        """The drawings the gate judges on: the fresh ones, or one fold of them (each read by a model that never
        trained on it)."""
        if self.judged_fold is None:
            return self.users_fresh
        return self.users_fresh.subset(self.folds == self.judged_fold)

    @property
    def folds(self) -> np.ndarray:
        return np.array([judging_fold(i, self.fold_count) for i in self.users_fresh.prediction_ids], dtype=np.int64)

    def training_set(
        self,
        mnist_index: np.ndarray | None = None,
        users_index: np.ndarray | None = None,
        leave_out_fold: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """MNIST, the users' drawings repeated ``oversample`` times, and the pseudo-labels once.

        Args:
            mnist_index: a part of the MNIST train split (default: all of it).
            users_index: a part of :attr:`users_train` (default: all of it).
            leave_out_fold: leave out the fresh drawings of this judging fold (the cross-fit).
        """
        xm = self.x_mnist if mnist_index is None else self.x_mnist[mnist_index]
        ym = self.y_mnist if mnist_index is None else self.y_mnist[mnist_index]
        keep = np.arange(len(self.users_train))
        if leave_out_fold is not None:
            keep = keep[np.concatenate([np.ones(len(self.users_seen), dtype=bool), self.folds != leave_out_fold])]
        if users_index is not None:
            keep = keep[users_index]
        users_x, users_y = self._copies_of(keep)
        parts_x, parts_y = [xm, users_x], [ym, users_y]
        if self.pseudo is not None and len(self.pseudo):
            parts_x.append(self.pseudo.x)
            parts_y.append(self.pseudo.y)
        return np.concatenate(parts_x), np.concatenate(parts_y)

    def _copies_of(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drawings of :attr:`users_train` at ``index``, each :attr:`copies` times (repeated, or with variants)."""
        users = self.users_train.subset(index)
        if self.label_share <= 0:
            return np.repeat(users.x, self.copies, axis=0), np.repeat(users.y, self.copies)
        x = np.concatenate([users.x[:, None], self._variants[index]], axis=1).reshape(-1, 28, 28)
        return x, np.repeat(users.y, self.copies)

    def sizes(self) -> dict[str, int]:
        return {
            "mnist_train": len(self.y_mnist),
            "mnist_holdout": len(self.y_mnist_holdout),
            "users_labels": len(self.users_seen) + len(self.users_fresh),
            "users_seen_by_champion": len(self.users_seen),
            "users_fresh": len(self.users_fresh),
            "judging_folds": self.fold_count,
            "users_judged": len(self.users_heldout),
            "pseudo_labels": 0 if self.pseudo is None else len(self.pseudo),
            "oversample": self.oversample,
            "label_copies": self.copies,
            "through_label_id": self.through_label_id,
            "champion_through_label_id": self.champion_through,
            "users_disputed_held_out": len(self.held_out.disputed),
            "users_suspects_set_aside": len(self.held_out.suspects),
        }


def judging_fold(prediction_id: int, folds: int) -> int:
    """The judging fold of a fresh drawing: a stable hash of its prediction id."""
    digest = hashlib.sha256(f"mnist-hitl-fold:{int(prediction_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, folds)


def concat(first: UserLabels, second: UserLabels) -> UserLabels:
    return UserLabels(
        np.concatenate([first.x, second.x]),
        np.concatenate([first.y, second.y]),
        np.concatenate([first.prediction_ids, second.prediction_ids]),
        np.concatenate([first.label_ids, second.label_ids]),
        np.concatenate([first.predicted, second.predicted]),
    )


def champion_through(store: Store, deployed_version: str | None) -> int:
    """The newest label id the deployed model trained with (0: the first model, MNIST alone)."""
    for row in store.model_versions():
        if row["version"] == deployed_version:
            return int(row["details"].get("through_label_id") or 0)
    return 0


def retrain_data(
    settings: Settings,
    store: Store,
    through_label_id: int | None = None,
    oversample: int = 5,
    folds: int = 2,
    deployed_version: str | None = None,
) -> RetrainData:
    """MNIST and all users' labels up to ``through_label_id``, split into those the champion saw and fresh ones.

    Args:
        settings: MNIST, and the deployed model.
        store: the users' labels, and the champion's record.
        deployed_version: the champion (default: the deployed model).
    """
    from mnist_hitl.learning.data import load_mnist
    from mnist_hitl.model import ModelFileError, deployed_model

    if deployed_version is None:
        try:
            deployed_version = deployed_model(settings.models_dir).version
        except ModelFileError:
            deployed_version = None
    labels = user_labels(store, 0, through_label_id)
    seen_through = champion_through(store, deployed_version)
    through = max(int(labels.label_ids.max()) if len(labels) else 0, int(through_label_id or 0))
    labels, held = without_held_out(store, labels, through)
    return training_data(settings, load_mnist(settings), labels, oversample, through, seen_through, folds, held)


def training_data(
    settings: Settings,
    dataset,
    labels: UserLabels,
    oversample: int,
    through: int,
    seen_through: int,
    folds: int = 2,
    held_out: HeldOut | None = None,
) -> RetrainData:
    """A retraining's data: a replay of ``dataset``'s train split and ``labels``, those up to ``seen_through`` first.

    The retraining and the search's workers both build their data here, so a worker's trials are the
    retraining's (the replay's seed is the newest label's id).

    Args:
        labels: the drawings that train and judge (:func:`retraining_labels`).
        held_out: the drawings left out of ``labels``, for the record.
    """
    fresh = labels.label_ids > seen_through
    replay = replay_sample(
        len(dataset.y_train), _replay_size(settings, oversample, len(labels)), settings.seed + through
    )
    return RetrainData(
        dataset.x_train[replay],
        dataset.y_train[replay],
        dataset.x_test,
        dataset.y_test,
        labels.subset(~fresh),
        labels.subset(fresh),
        oversample,
        through,
        seen_through,
        folds,
        label_share=settings.label_share,
        seed=settings.seed + through,
        held_out=held_out or HeldOut(),
    )


def _replay_size(settings: Settings, oversample: int, labels: int) -> int:
    """``MNIST_HITL_REPLAY``, or more when the labels' copies outnumber it: MNIST stays at least half of the examples.

    A few dozen labels train beside the replay as a fixed share; hundreds of labels copied ``oversample``
    times would outweigh it and wear the model's MNIST skill away, so the replay grows with them (0: all).
    """
    if settings.replay <= 0:
        return 0
    copies = max(oversample, copies_for_share(labels, settings.replay, settings.label_share))
    return max(settings.replay, labels * copies) if settings.label_share > 0 else settings.replay


def replay_sample(available: int, size: int, seed: int) -> np.ndarray:
    """Which MNIST train digits a retraining replays: ``size`` of them at random (all when 0 or more than there are).

    A retraining that replays a sample rather than the whole split is quicker, and its people's labels weigh
    more; the seed changes with the data (the newest label), so successive retrainings replay different digits.
    """
    if size <= 0 or size >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).choice(available, size, replace=False))


def unlabelled_pictures(store: Store, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The newest ``limit`` drawings nobody labelled: 28x28 uint8 pictures and their prediction ids."""
    labelled = set(store.current_labels())
    newest = store.counts().get("predictions", 0)
    rows = [p for p in store.predictions(max(0, newest - 3 * limit)) if p.id not in labelled][-limit:]
    if not rows:
        return np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return np.stack([_as_digit(decode_image(p.png)) for p in rows]), np.array([p.id for p in rows], dtype=np.int64)
