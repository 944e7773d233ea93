"""Drawings in another hand, made from MNIST digits: the shifted users the loop is tested and measured on.

No person draws in this workplace's tests, so the benchmark (``bench/replay.py``)
and the loop's tests redraw MNIST digits the way a population of other writers
might: thicker strokes, turned, slanted, wobbly, anywhere on the 280x280 canvas.
The drift measures must notice them and a retraining on their labels must help.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mnist_hitl.learning.monitor.drift import as_unit


@dataclass(frozen=True)
class Style:
    """How :func:`shifted_style` redraws a digit (ranges are drawn uniformly per digit).

    Defaults: strokes 4-8 px thicker on a 140 px digit, turned 25-40 degrees
    anticlockwise, slanted, wobbly, placed anywhere on the 280x280 canvas at
    90-200 px. The first model (98.9% on the MNIST holdout) reads about 79% of them.
    """

    thicken: tuple[int, int] = (4, 8)
    rotate: tuple[float, float] = (-40.0, -25.0)
    shear: tuple[float, float] = (0.5, 0.8)
    elastic: float = 12.0
    size: tuple[int, int] = (90, 200)


def _redraw(image: np.ndarray, rng: np.random.Generator, style: Style, canvas: int) -> np.ndarray:
    from PIL import Image

    big = np.asarray(Image.fromarray(image).resize((140, 140), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    mask = big > 0.4
    grow = int(rng.integers(style.thicken[0], style.thicken[1] + 1))
    if grow > 0:
        mask = ndimage.binary_dilation(mask, iterations=grow)
    elif grow < 0:
        thinner = ndimage.binary_erosion(mask, iterations=-grow)
        mask = thinner if thinner.any() else mask
    picture = np.pad(mask.astype(np.float32), 70)
    if style.elastic:
        h, w = picture.shape
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), 12) * style.elastic * 12
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), 12) * style.elastic * 12
        yy, xx = np.mgrid[0:h, 0:w]
        picture = ndimage.map_coordinates(picture, [yy + dy, xx + dx], order=1)
    angle = np.deg2rad(rng.uniform(*style.rotate))
    slant = rng.uniform(*style.shear)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = turn @ np.array([[1.0, 0.0], [slant, 1.0]])
    centre = np.array(picture.shape) / 2
    picture = ndimage.affine_transform(picture, matrix, offset=centre - matrix @ centre, order=1)
    ys, xs = np.nonzero(picture > 0.3)
    if len(ys) == 0:
        picture = np.pad(mask.astype(np.float32), 70)
        ys, xs = np.nonzero(picture > 0.3)
    picture = picture[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    size = int(rng.integers(style.size[0], style.size[1] + 1))
    scale = size / max(picture.shape)
    height, width = max(1, int(picture.shape[0] * scale)), max(1, int(picture.shape[1] * scale))
    picture = np.asarray(Image.fromarray(picture).resize((width, height), Image.Resampling.BILINEAR))
    field_ = np.zeros((canvas, canvas), dtype=np.float32)
    top = int(rng.integers(0, canvas - height + 1))
    left = int(rng.integers(0, canvas - width + 1))
    field_[top : top + height, left : left + width] = picture
    return (np.clip(field_, 0.0, 1.0) * 255).astype(np.uint8)


def shifted_style(images: np.ndarray, seed: int = 0, style: Style = Style(), canvas: int = 280) -> np.ndarray:
    """Redraw MNIST digits in another style, as drawings on a ``canvas`` x ``canvas`` picture.

    Args:
        images: MNIST digits (n, 28, 28), uint8.
        seed: the same seed always gives the same drawings.
        style: the ranges of thickening, rotation, slant, distortion and size.
        canvas: side of the square picture (the app's canvas is 280).

    Returns:
        ``uint8`` pictures (n, canvas, canvas), white ink on black, not yet
        preprocessed: pass each through :func:`mnist_hitl.preprocess.to_mnist`
        (or :meth:`mnist_hitl.workbench.workbench.Workbench.predict_picture`).
    """
    rng = np.random.default_rng(seed)
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(as_unit(images), 0, 1) * 255).astype(np.uint8)
    return (
        np.stack([_redraw(image, rng, style, canvas) for image in images])
        if len(images)
        else np.zeros((0, canvas, canvas), dtype=np.uint8)
    )
