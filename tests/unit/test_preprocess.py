"""Preprocessing: drawings become MNIST-style 28x28 digits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mnist_hitl.preprocess import (
    EmptyDrawingError,
    InvalidImageError,
    centre_of_mass,
    decode_image,
    encode_png,
    render_strokes,
    to_mnist,
    translate,
)

SEVEN = [[(80, 70), (200, 70), (120, 220)]]


def _shifted(strokes, dx, dy):
    return [[(x + dx, y + dy) for x, y in stroke] for stroke in strokes]


def _scaled(strokes, factor, centre=(140, 140)):
    cx, cy = centre
    return [[(cx + (x - cx) * factor, cy + (y - cy) * factor) for x, y in stroke] for stroke in strokes]


def test_output_is_mnist_shaped_with_centred_mass_in_a_20px_box():
    digit = to_mnist(render_strokes(SEVEN))
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0.0 and digit.max() <= 1.0
    cy, cx = ndimage.center_of_mass(digit)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    rows = np.flatnonzero((digit > 0.1).any(axis=1))
    cols = np.flatnonzero((digit > 0.1).any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)


@pytest.mark.parametrize("dx,dy", [(-50, 30), (40, -40), (30, 45)])
def test_a_drawing_moved_on_the_canvas_gives_nearly_the_same_digit(dx, dy):
    base = to_mnist(render_strokes(SEVEN))
    moved = to_mnist(render_strokes(_shifted(SEVEN, dx, dy)))
    assert np.abs(base - moved).mean() < 0.02


@pytest.mark.parametrize("factor", [0.6, 1.3])
def test_a_drawing_scaled_on_the_canvas_gives_nearly_the_same_digit(factor):
    # the pen is scaled too: a fixed pen makes a smaller digit bolder, which is not preprocessing's doing
    base = to_mnist(render_strokes(SEVEN))
    scaled = to_mnist(render_strokes(_scaled(SEVEN, factor), width=round(20 * factor)))
    assert np.abs(base - scaled).mean() < 0.03
    assert np.corrcoef(base.ravel(), scaled.ravel())[0, 1] > 0.93


def test_empty_and_speck_drawings_are_refused():
    with pytest.raises(EmptyDrawingError, match="empty"):
        to_mnist(render_strokes([]))
    with pytest.raises(EmptyDrawingError, match="too small"):
        to_mnist(render_strokes([[(140, 140)]], width=4))


def test_ink_on_paper_is_inverted_like_mnist():
    drawing = render_strokes(SEVEN)
    assert np.allclose(to_mnist(255 - drawing), to_mnist(drawing), atol=1e-5)


def test_transparent_png_from_a_canvas_reads_its_ink():
    drawing = render_strokes(SEVEN)
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = drawing
    assert np.allclose(to_mnist(rgba), to_mnist(drawing), atol=1e-5)


def test_png_round_trip_and_broken_bytes():
    digit = to_mnist(render_strokes(SEVEN))
    decoded = decode_image(encode_png(digit))
    assert decoded.shape == (28, 28) and np.abs(decoded / 255.0 - digit).max() < 1 / 255 + 1e-6
    with pytest.raises(InvalidImageError, match="not a readable image"):
        decode_image(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(InvalidImageError):
        decode_image(b"")


def test_a_28x28_mnist_digit_is_taken_as_is():
    from mnist_hitl.learning.data import load_bundled

    digit = load_bundled().x_test[0]
    assert np.allclose(to_mnist(digit), digit / 255.0)


def test_centring_computes_what_scipy_ndimage_computes_on_every_bundled_digit():
    """The centring without scipy (it costs each serving process ~26 MB) gives the same digits, bit for bit."""
    from mnist_hitl.learning.data import load_bundled

    data = load_bundled()
    digits = np.concatenate([data.x_train, data.x_test]).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    for digit in digits:
        assert centre_of_mass(digit) == ndimage.center_of_mass(digit)
        move = tuple(int(m) for m in rng.integers(-8, 9, size=2))
        assert np.array_equal(translate(digit, *move), ndimage.shift(digit, move, order=0, mode="constant", cval=0.0))
    assert not translate(digits[0], 28, 0).any() and not translate(digits[0], 0, -30).any()  # moved out entirely
