"""How a learning cycle can end: the names the summary, MLflow, the metrics and the CLI share."""

from __future__ import annotations

from enum import StrEnum


class CycleOutcome(StrEnum):
    NO_NEW_DATA = "no_new_data"  # no label newer than the last cycle's: nothing done
    NO_RETRAIN = "no_retrain"  # the monitor ran and decided not to retrain
    PROMOTED = "promoted"  # a challenger was trained and deployed
    REJECTED = "rejected"  # a challenger was trained and kept on file, not deployed
    FAILED = "failed"  # a stage failed; the deployed model and the watermarks are unchanged
    BUSY = "busy"  # another cycle held the lock
