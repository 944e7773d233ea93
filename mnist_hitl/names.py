"""The vocabularies several layers share: label kinds, prediction sources, cycle outcomes, load-failure reasons.

They live at the bottom so that the recorder (:mod:`mnist_hitl.metrics`), the store, the predictor
and the learning loop all spell them the same way without importing one another.
"""

from __future__ import annotations

from enum import StrEnum

UNDO = "undo"  # a label meaning "no label": the prediction is unlabelled again
ADJUDICATE = "adjudicate"  # a digit decided for a drawing whose reviewers disagree
LABEL_KINDS = ("confirm", "correct", ADJUDICATE, UNDO)
IMPORT = "import"  # the source of imported pictures, stored once each (by content hash)

# Why a deployed model could not be loaded: the ``reason`` of a ModelFileError and of the metric.
LOAD_FAILURE_REASONS = (
    "no_model",
    "bad_pointer",
    "missing_export",
    "checksum_mismatch",
    "unloadable",
    "wrong_input_shape",
)


class CycleOutcome(StrEnum):
    """How a learning cycle can end: the names the summary, MLflow, the metrics and the CLI share."""

    NO_NEW_DATA = "no_new_data"  # no label newer than the last cycle's: nothing done
    NO_RETRAIN = "no_retrain"  # the monitor ran and decided not to retrain
    PROMOTED = "promoted"  # a challenger was trained and deployed
    REJECTED = "rejected"  # a challenger was trained and kept on file, not deployed
    FAILED = "failed"  # a stage failed; the deployed model and the watermarks are unchanged
    BUSY = "busy"  # another cycle held the lock
