"""The operations a user performs, shared by the app, the API, the CLI and scripts.

``Workbench`` ties the store and the fast predictor together: predict a picture
(preprocess, infer, store), label a prediction and undo a label, read a prediction back,
import pictures into the pool (:mod:`mnist_hitl.workbench.pool`), serve the review queue
(:mod:`mnist_hitl.workbench.ranking`), load the deployed model, report the status. The app,
the API and the CLI ask the workbench, never its store or its predictor, so those stay its
own business (how it shares them between threads, say). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import numpy as np

from mnist_hitl import metrics
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.model import ModelFileError, Predictor, deployed_model
from mnist_hitl.preprocess import EmptyDrawingError, InvalidImageError, decode_image, read_picture_file, to_mnist
from mnist_hitl.store import UNDO, Prediction, StoreError, open_store
from mnist_hitl.workbench import pool
from mnist_hitl.workbench.ranking import QueueItem, ScoreCache, doubtful, labelled_scores, review_queue
from mnist_hitl.workbench.recording import PredictionResult, predict_and_store


class Workbench:
    """Predict, label and report against one home folder.

    Args:
        settings: defaults to the environment's settings.
        source: who is predicting (``app``, ``cli``...), stored with each prediction.

    Attributes:
        store, predictor, scores: its store, the deployed model and the queue's score cache,
            shared by the three; the app, the API and the CLI call the methods below instead.
    """

    def __init__(self, settings: Settings | None = None, source: str = "app") -> None:
        self.settings = settings or get_settings()
        self.source = source
        self.store = open_store(self.settings)  # the session owns its store: every way in builds one Workbench
        self.predictor = Predictor(self.settings.models_dir)
        self.scores = ScoreCache(self.store, self.predictor)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the deployed model ------------------------------------------------------------------

    def refresh_model(self, force: bool = False) -> bool:
        """Load the deployed model if it changed since the last look (``force``: read it again); True if it did.

        Raises:
            ModelFileError: no model can be loaded and none is held; or, with ``force``, the deployed
                one cannot be loaded (the one held keeps serving).
        """
        return self.predictor.refresh(force=force)

    @property
    def model_version(self) -> str:
        """The deployed model's version, after looking for a newer deployment.

        Raises:
            ModelFileError: no model can be loaded.
        """
        return self.predictor.version

    @property
    def serving_version(self) -> str | None:
        """The version of the model held now, without looking for a newer one (None: none held)."""
        return self.predictor.serving_version

    def score_digits(self, digits: np.ndarray) -> tuple[np.ndarray, str]:
        """The deployed model's probabilities for MNIST-style digits (n, 28, 28), values 0-1; nothing is stored.

        Returns:
            (probabilities of shape (n, 10), the version that produced them).
        """
        return self.predictor.predict_batch(digits)

    # predictions and labels ----------------------------------------------------------------

    def predict_picture(self, picture: np.ndarray) -> PredictionResult:
        """Preprocess a picture MNIST-style, predict it, store it.

        Raises:
            EmptyDrawingError: nothing drawn; nothing is stored.
            ModelFileError: no usable deployed model; nothing is stored.
        """
        start = time.perf_counter()
        try:
            return predict_and_store(self.store, self.predictor, to_mnist(picture), self.source, start)
        except (EmptyDrawingError, InvalidImageError, ModelFileError) as error:
            metrics.record_refusal(type(error).__name__)
            raise

    def predict_png(self, data: bytes) -> PredictionResult:
        """Like :meth:`predict_picture`, from picture file bytes (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM).

        Raises:
            PictureTooLargeError: over ``MNIST_HITL_MAX_PICTURE_BYTES`` or ``_PIXELS``; nothing is decoded.
            InvalidImageError: not a readable picture.
        """
        try:
            picture = decode_image(data, self.settings.max_picture_bytes, self.settings.max_picture_pixels)
        except InvalidImageError as error:
            metrics.record_refusal(type(error).__name__)
            raise
        return self.predict_picture(picture)

    def predict_file(self, path: str | Path) -> PredictionResult:
        """Like :meth:`predict_png`, from a picture file, which is not read if it is over the size limit.

        Raises:
            OSError: the file cannot be read.
        """
        try:
            data = read_picture_file(path, self.settings.max_picture_bytes)
        except InvalidImageError as error:
            metrics.record_refusal(type(error).__name__)
            raise
        return self.predict_png(data)

    def label(self, prediction_id: int, label: int, kind: str = "correct") -> int:
        """Append the user's label for a prediction; returns the label's id.

        Raises:
            StoreError: the label is outside 0-9 or the prediction does not exist.
        """
        try:
            label_id = self.store.add_label(prediction_id, label, kind)
        except StoreError:
            metrics.record_refusal("StoreError")
            raise
        metrics.record_label(int(label), kind)
        return label_id

    def status(self) -> dict:
        """The deployed model and the store's counts."""
        try:
            deployed = deployed_model(self.settings.models_dir)
            model = {"model_version": deployed.version, "holdout_accuracy": deployed.holdout_accuracy}
        except ModelFileError as error:
            model = {"model_version": None, "model_error": str(error)}
        return {**model, **self.counts(), "home": str(self.settings.home)}

    def undo(self, prediction_id: int) -> int:
        """Append an ``undo`` to a prediction's labels: it is unlabelled again; returns the undo's label id.

        Raises:
            StoreError: no such prediction, or no label to undo.
        """
        try:
            label_id, undone = self.store.undo_label(prediction_id)
        except StoreError:
            metrics.record_refusal("StoreError")
            raise
        metrics.record_label(undone.label, UNDO)
        return label_id

    def history(self, prediction_id: int) -> list[dict]:
        """Every label of a prediction, oldest first: ``id``, ``label`` (None for an undo), ``kind``, ``created_at``.

        Raises:
            StoreError: no such prediction.
        """
        labels = self.store.labels(prediction_id)
        if not labels:
            self.store.get_prediction(prediction_id)  # raises when there is no such prediction
        return [
            {"id": label.id, "label": label.label, "kind": label.kind, "created_at": label.created_at}
            for label in labels
        ]

    def prediction(self, prediction_id: int) -> Prediction:
        """A stored prediction.

        Raises:
            StoreError: no such prediction.
        """
        return self.store.get_prediction(prediction_id)

    def counts(self) -> dict[str, int]:
        """The store's numbers of predictions, labels (all, confirms, corrections) and labelled predictions."""
        return self.store.counts()

    def queue(self, limit: int = 20, strategy: str = "margin", exclude: Collection[int] = ()) -> list[QueueItem]:
        """The unlabelled predictions the deployed model is least sure of, first, with a share drawn at random.

        Args:
            limit: at most this many items.
            strategy: ``margin``, ``entropy``, or ``doubtful`` (labels the model doubts, see
                :meth:`doubtful_labels`).
            exclude: prediction ids to leave out (skipped).

        Raises:
            ModelFileError: no deployed model.
            ValueError: an unknown strategy or a negative limit.
        """
        return review_queue(self.store, self.scores, self.settings, limit, strategy, exclude)

    def import_pictures(self, paths: Iterable[str | Path], progress: bool = False) -> Iterator[dict]:
        """Predict and store pictures (files, folders, zips of PNG/JPEG) unlabelled (:mod:`.pool`)."""
        return pool.import_pictures(self.store, self.predictor, self.settings, paths, progress)

    def import_uploads(self, uploads: Iterable[tuple[str, bytes]]) -> Iterator[dict]:
        """Predict and store pictures received as ``(name, bytes)``, zips expanded (:mod:`.pool`)."""
        return pool.import_uploads(self.store, self.predictor, self.settings, uploads)

    def doubtful_labels(self, confidence: float | None = None) -> list[dict]:
        """The users' latest labels that the deployed model, at ``confidence`` or more, reads as another digit.

        Args:
            confidence: default ``MNIST_HITL_DOUBT_CONFIDENCE``.
        """
        version, ids, probabilities = self.scores.current()
        scores = labelled_scores(self.store.current_labels(), ids, probabilities)
        return doubtful(scores, self.settings.doubt_confidence if confidence is None else confidence, version)

    def labelled_accuracy(self) -> float | None:
        """The deployed model's accuracy on the users' latest labels (None: no labels)."""
        _, ids, probabilities = self.scores.current()
        scores = labelled_scores(self.store.current_labels(), ids, probabilities)
        return float(np.mean(scores.model == scores.person)) if len(scores.labels) else None
