"""A user session in its own process, for the metrics tests: ``python user_session.py START COUNT``.

Predicts COUNT bundled holdout digits from index START, labels each (every third right
answer is "corrected" anyway, so both kinds of label occur) and sends one empty drawing.
"""

import sys

import numpy as np

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.preprocess import EmptyDrawingError
from mnist_hitl.workbench import Workbench

start, count = int(sys.argv[1]), int(sys.argv[2])
data = load_bundled()
with Workbench(source="cli") as bench:
    for i in range(start, start + count):
        result = bench.predict_picture(data.x_test[i])
        truth = int(data.y_test[i])
        if result.predicted_label == truth and i % 3:
            bench.label(result.prediction_id, truth, "confirm")
        else:
            bench.label(result.prediction_id, truth if result.predicted_label != truth else (truth + 1) % 10, "correct")
    try:
        bench.predict_picture(np.zeros((28, 28), np.uint8))
    except EmptyDrawingError:
        pass
