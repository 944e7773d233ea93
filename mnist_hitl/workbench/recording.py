"""Predict and store: the one sequence every way in (a drawing, a picture file, an import) goes through.

A picture arrives MNIST-style (28x28, see :mod:`mnist_hitl.preprocess`); the deployed model reads it,
the store keeps the picture, the ten probabilities and the version that read them, and the
recorder counts it. What a caller gets back is :class:`PredictionResult`, the same record the
app shows, the CLI prints and the HTTP API returns.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from mnist_hitl import metrics
from mnist_hitl.model import Predictor
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import NewPrediction, Store


@dataclass(frozen=True, kw_only=True)
class PredictionResult(NewPrediction):
    """What a prediction returns to its caller: the fields stored, the new prediction's id, the picture read."""

    prediction_id: int = field(metadata={"description": "the stored prediction's id", "examples": [1]})
    digit: np.ndarray = field(repr=False)  # the 28x28 picture the model saw

    @property
    def confidence(self) -> float:
        return self.probabilities[self.predicted_label]

    def as_json(self) -> dict:
        return {
            "prediction_id": self.prediction_id,
            "predicted_label": self.predicted_label,
            "probabilities": [round(p, 6) for p in self.probabilities],
            "model_version": self.model_version,
        }


def predict_and_store(
    store: Store, predictor: Predictor, digit: np.ndarray, source: str, start: float, png: bytes | None = None
) -> PredictionResult:
    """Read a 28x28 digit with the deployed model and store the prediction.

    Args:
        source: who predicts (``app``, ``cli``, ``api``, ``import``), stored with the prediction.
        start: ``time.perf_counter()`` when the picture arrived: the stored latency counts from there.
        png: the digit as the PNG to store, when the caller has it already.

    Raises:
        ModelFileError: no usable deployed model; nothing is stored.
        StoreError: the store refused it (``DuplicateError``: an import stored already).
    """
    probabilities, version = predictor.predict(digit)
    label = int(np.argmax(probabilities))
    latency_ms = (time.perf_counter() - start) * 1000
    stored = NewPrediction(
        png or encode_png(digit), label, [float(p) for p in probabilities], version, latency_ms, source
    )
    prediction_id = store.record_prediction(**asdict(stored))
    metrics.record_prediction(label, version, latency_ms / 1000)
    return PredictionResult(**asdict(stored), prediction_id=prediction_id, digit=digit)
