"""What the integration tests share: what a predictor reads."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled


@pytest.fixture
def digit() -> np.ndarray:
    """The first bundled holdout digit as a predictor takes it: 28x28 floats in [0, 1]."""
    return load_bundled().x_test[0].astype(np.float32) / 255.0
