"""What a person does: predict and store (:mod:`.recording`, written once), label, undo, history, import
into the pool (:mod:`.pool`), the review ranking (:mod:`.ranking`). The app, the API and the CLI call
:class:`Workbench`; the store and the predictor it holds are its own business.
"""

from mnist_hitl.workbench.ranking import STRATEGIES, QueueItem
from mnist_hitl.workbench.recording import PredictionResult, predict_and_store
from mnist_hitl.workbench.workbench import Workbench

__all__ = ["STRATEGIES", "PredictionResult", "QueueItem", "Workbench", "predict_and_store"]
