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
from mnist_hitl.store import UNDO, UNKNOWN_REVIEWER, Prediction, StoreError, open_store
from mnist_hitl.workbench import agreement, pool
from mnist_hitl.workbench.adjudication import adjudication_queue
from mnist_hitl.workbench.opinions import second_opinion_queue
from mnist_hitl.workbench.ranking import QueueItem, ScoreCache, doubtful, labelled_scores, review_queue
from mnist_hitl.workbench.recording import PredictionResult, predict_and_store
from mnist_hitl.workbench.suspects import suspect_queue


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

    def label(self, prediction_id: int, label: int, kind: str = "correct", reviewer: str = UNKNOWN_REVIEWER) -> int:
        """Append ``reviewer``'s label for a prediction, ending their lease on it; returns the label's id.

        Answer a drawing the ``suspect`` or ``adjudicate`` queue served with kind ``adjudicate``: it decides
        the drawing (:mod:`.adjudication`).

        Raises:
            StoreError: the label is outside 0-9, the reviewer's name is empty or too long, or the
                prediction does not exist.
        """
        try:
            label_id = self.store.add_label(prediction_id, label, kind, reviewer)
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

    def undo(self, prediction_id: int, reviewer: str = UNKNOWN_REVIEWER) -> int:
        """Append ``reviewer``'s ``undo`` to a prediction's labels: it is unlabelled again, and their lease on it
        ends; returns the undo's id.

        Raises:
            StoreError: no such prediction, or no label to undo.
        """
        try:
            label_id, undone = self.store.undo_label(prediction_id, reviewer)
        except StoreError:
            metrics.record_refusal("StoreError")
            raise
        metrics.record_label(undone.label, UNDO)
        return label_id

    def history(self, prediction_id: int) -> list[dict]:
        """Every label of a prediction, oldest first: ``id``, ``label`` (None for an undo), ``kind``, ``created_at``,
        ``reviewer``.

        Raises:
            StoreError: no such prediction.
        """
        labels = self.store.labels(prediction_id)
        if not labels:
            self.store.get_prediction(prediction_id)  # raises when there is no such prediction
        return [
            {
                "id": label.id,
                "label": label.label,
                "kind": label.kind,
                "created_at": label.created_at,
                "reviewer": label.reviewer,
            }
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

    def queue(
        self, limit: int = 20, strategy: str = "margin", exclude: Collection[int] = (), reviewer: str | None = None
    ) -> list[QueueItem]:
        """The unlabelled predictions the deployed model is least sure of, first, with a share drawn at random.

        Args:
            limit: at most this many items.
            strategy: ``margin``, ``entropy``, ``doubtful`` (labels the model doubts, see
                :meth:`doubtful_labels`) or ``suspect`` (labels confident learning flags, each with its
                ``reason``: :mod:`.suspects`; answered with kind ``adjudicate``, as the label given and why it
                is suspect are known) or ``second-opinion`` (labelled drawings for a reviewer who has
                not labelled them, the first answer not shown: :mod:`.opinions`; needs ``reviewer``) or
                ``adjudicate`` (disputed drawings, the competing labels and their reviewers in each ``reason``:
                :mod:`.adjudication`).
            exclude: prediction ids to leave out (skipped).
            reviewer: lease what is returned to this reviewer for ``MNIST_HITL_LEASE_SECONDS`` (their own
                leases renewed) and leave out what others hold; None: no leases, nothing left out.

        Raises:
            ModelFileError: no deployed model.
            ValueError: an unknown strategy, a negative limit, or a second opinion asked for no one.
            StoreError: a reviewer's name that is empty or too long.
        """
        if reviewer is None:
            if strategy == "second-opinion":
                raise ValueError("a second opinion needs the reviewer who gives it")
            return self._ranked(limit, strategy, exclude)
        excluded, served = set(exclude), []
        for _ in range(3):  # another reviewer may lease some of these between the ranking and our lease
            excluded |= self.store.leased_to_others(reviewer)
            ranked_after = self.store.newest_label_id()
            items = self._ranked(limit - len(served), strategy, excluded, reviewer)
            asked = [item.prediction_id for item in items]
            leased = set(self.store.lease(asked, reviewer, self.settings.lease_seconds))
            # ...or label one (their label ended their lease): it is no longer what was ranked, so it is given back
            for changed in self.store.labelled_since(leased, ranked_after):
                self.store.release(changed, reviewer)
                leased.discard(changed)
            served += [item for item in items if item.prediction_id in leased]
            excluded |= {item.prediction_id for item in items}
            if len(leased) == len(items):
                break
        return served

    def _ranked(self, limit: int, strategy: str, exclude: Collection[int], reviewer: str = "") -> list[QueueItem]:
        if strategy == "second-opinion":
            return second_opinion_queue(self.store, self.scores, self.settings, limit, reviewer.strip(), exclude)
        if strategy == "suspect":
            return suspect_queue(self.store, self.scores, limit, exclude)
        if strategy == "adjudicate":
            return adjudication_queue(self.store, self.scores, limit, exclude)
        return review_queue(self.store, self.scores, self.settings, limit, strategy, exclude)

    def release(self, prediction_id: int, reviewer: str) -> bool:
        """Give back a drawing the queue leased to ``reviewer`` (a skip): others may be given it now. (A label or an
        undo by ``reviewer`` ends their lease on its drawing too.)"""
        return self.store.release(prediction_id, reviewer)

    def lease(self, prediction_id: int, reviewer: str) -> bool:
        """Lease one drawing to ``reviewer`` for ``MNIST_HITL_LEASE_SECONDS``, as the queue does when it serves it
        (their own lease renewed): a drawing brought back to decide again. False if another reviewer holds it.

        Raises:
            StoreError: a reviewer's name that is empty or too long.
        """
        return bool(self.store.lease([prediction_id], reviewer, self.settings.lease_seconds))

    def import_pictures(
        self, paths: Iterable[str | Path], progress: bool = False, reviewer: str = UNKNOWN_REVIEWER
    ) -> Iterator[dict]:
        """Predict and store pictures (files, folders, zips of PNG/JPEG) unlabelled, and the pictures of exports with
        their labels, given by ``reviewer`` (:mod:`.pool`)."""
        return pool.import_pictures(self.store, self.predictor, self.settings, paths, progress, reviewer)

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

    def reviewers(self) -> list[dict]:
        """Everyone who gave a label: labels, undos, drawings labelled now, their last label's time."""
        return agreement.reviewers(self.store.labels())

    def agreement(self) -> dict:
        """How far the reviewers agree: Cohen's kappa per pair, Krippendorff's alpha, per digit (:mod:`.agreement`)."""
        return agreement.agreement(self.store.labels())

    def labelled_accuracy(self) -> float | None:
        """The deployed model's accuracy on the users' latest labels (None: no labels)."""
        _, ids, probabilities = self.scores.current()
        scores = labelled_scores(self.store.current_labels(), ids, probabilities)
        return float(np.mean(scores.model == scores.person)) if len(scores.labels) else None
