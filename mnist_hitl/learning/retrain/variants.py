"""Variants of people's drawings: each label seen in many plausible hands, not as one picture repeated.

A few dozen labels beside a thousand or more MNIST digits are a whisper unless they weigh: a
retraining gives them a fixed share of what it trains on (``MNIST_HITL_LABEL_SHARE``). Repeating a
drawing to fill that share teaches the model that one picture; its variants (turned, scaled,
shifted, thickened or thinned, and bent by a smooth elastic field) teach the style around it.
The training's own random augmentation still applies on top.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_TURN_DEGREES = 10.0
SCALES = (0.9, 1.1)
MAX_SHIFT = 2.0  # pixels
ELASTIC_SMOOTHING = 4.0  # the Gaussian's sigma, pixels
ELASTIC_STRENGTH = 12.0


def variants(pictures: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random variants of each 28x28 picture: shape (n, count, 28, 28), same dtype.

    The same pictures, count and seed give the same variants (the search's workers rebuild them).
    """
    pictures = np.asarray(pictures)
    out = np.empty((len(pictures), max(0, count), 28, 28), dtype=pictures.dtype)
    if not count or not len(pictures):
        return out
    rng = np.random.default_rng(seed)
    scale = 255.0 if pictures.dtype == np.uint8 else 1.0
    grid = np.mgrid[0:28, 0:28].astype(np.float32)
    for i, picture in enumerate(pictures.astype(np.float32) / scale):
        for j in range(count):
            out[i, j] = (_variant(picture, rng, grid) * scale).astype(pictures.dtype)
    return out


def _variant(picture: np.ndarray, rng: np.random.Generator, grid: np.ndarray) -> np.ndarray:
    """One variant of a picture in [0, 1]: an affine move, a stroke width change, an elastic bend."""
    angle = np.deg2rad(rng.uniform(-MAX_TURN_DEGREES, MAX_TURN_DEGREES))
    matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / rng.uniform(*SCALES)
    centre = np.array([13.5, 13.5])
    offset = centre - matrix @ centre - rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    moved = ndimage.affine_transform(picture, matrix, offset=offset, order=1)
    width = rng.integers(-1, 2)
    if width > 0:
        moved = ndimage.grey_dilation(moved, size=(2, 2))
    elif width < 0:
        moved = ndimage.grey_erosion(moved, size=(2, 2)) * 0.5 + moved * 0.5
    bend = [
        ndimage.gaussian_filter(rng.uniform(-1, 1, (28, 28)), ELASTIC_SMOOTHING) * ELASTIC_STRENGTH for _ in range(2)
    ]
    bent = ndimage.map_coordinates(moved, [grid[0] + bend[0], grid[1] + bend[1]], order=1)
    return np.clip(bent, 0.0, 1.0)


def copies_for_share(labels: int, others: int, share: float, most: int = 40) -> int:
    """How many times each of ``labels`` drawings appears so they are ``share`` of the training examples.

    Args:
        labels: people's labelled drawings.
        others: the other examples (the MNIST replay and any pseudo-labels).
        share: the wanted share, in [0, 1).
        most: the cap, so a handful of labels is not copied thousands of times.
    """
    if labels <= 0 or share <= 0:
        return 1
    wanted = share / (1.0 - share) * others
    return int(min(most, max(1, round(wanted / labels))))
