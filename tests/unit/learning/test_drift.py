"""Drift features, the drift score and the Evidently report (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.learning.monitor import drift
from mnist_hitl.learning.synthetic import shifted_style
from mnist_hitl.preprocess import to_mnist


@pytest.fixture(scope="module")
def mnist():
    return load_bundled()


def bar(width: int, top: int = 4, left: int = 12, height: int = 20) -> np.ndarray:
    picture = np.zeros((28, 28), dtype=np.uint8)
    picture[top : top + height, left : left + width] = 255
    return picture


def test_features_of_known_pictures():
    features = drift.image_features(np.stack([bar(2), bar(4), bar(4, top=0, left=0)]))
    assert list(features.columns) == list(drift.FEATURES[:6])
    thin, thick, corner = features.to_dict("records")
    assert thin["bbox_height"] == 20 and thin["bbox_width"] == 2
    assert thin["ink_fraction"] == pytest.approx(40 / 784)
    assert thin["mean_intensity"] == pytest.approx(40 / 784)
    assert thin["stroke_thickness"] == pytest.approx(2, abs=0.3)
    assert thick["stroke_thickness"] == pytest.approx(4, abs=0.6)
    assert thick["stroke_thickness"] > thin["stroke_thickness"]
    assert corner["com_offset"] > 10 > thick["com_offset"]


def test_features_of_no_pictures_and_of_a_blank_one():
    components = drift.PixelComponents.fit(np.stack([bar(2), bar(4), bar(6)]))
    empty = drift.image_features(np.zeros((0, 28, 28), dtype=np.uint8), components)
    assert len(empty) == 0 and list(empty.columns) == list(drift.FEATURES)
    blank = drift.image_features(np.zeros((1, 28, 28), dtype=np.uint8), components)
    assert blank.loc[0, "ink_fraction"] == 0 and blank.loc[0, "stroke_thickness"] == 0


def test_principal_components_separate_what_differs(mnist):
    components = drift.PixelComponents.fit(mnist.x_train[:1000])
    features = drift.image_features(mnist.x_train[:1000], components)
    assert abs(features["pc1"].mean()) < 1e-6  # centred on the reference
    assert features["pc1"].std() > features["pc2"].std() > features["pc3"].std()


def test_drift_score_is_small_for_the_same_digits_and_large_for_another_style(mnist):
    reference = mnist.x_train
    assert drift.intensity_drift(reference, reference) == 0
    same = drift.intensity_drift(mnist.x_test[:300], reference)
    shifted = np.stack([to_mnist(p) for p in shifted_style(mnist.x_test[:300], seed=1)])
    other = drift.intensity_drift(shifted, reference)
    assert same < 0.15  # measured 0.06 (300 digits)
    assert other > 0.5  # measured 1.2: thick strokes
    assert np.isnan(drift.intensity_drift(np.zeros((0, 28, 28), dtype=np.uint8), reference))


def test_drift_score_scale_is_the_reference_spread():
    reference = np.full((100, 28, 28), 0.1, dtype=np.float32)
    reference[:50] = 0.3  # mean intensities 0.1 and 0.3: spread 0.1
    current = reference + 0.05  # every mean moves by 0.05: half a spread
    assert drift.intensity_drift(current, reference) == pytest.approx(0.5, rel=1e-5)


def test_evidently_report_agrees_with_the_drift_score_and_is_saved(mnist, tmp_path):
    components = drift.PixelComponents.fit(mnist.x_train[:1500])
    reference = mnist.x_train[:1500]
    current = np.stack([to_mnist(p) for p in shifted_style(mnist.x_test[:60], seed=2)])
    summary = drift.drift_report(
        drift.image_features(reference, components),
        drift.image_features(current, components),
        0.1,
        tmp_path / "report.html",
    )
    assert summary.html_path.stat().st_size > 10_000
    assert summary.per_feature["mean_intensity"] == pytest.approx(drift.intensity_drift(current, reference), rel=1e-6)
    assert "stroke_thickness" in summary.drifted and 0 < summary.share <= 1
    assert set(summary.per_feature) == set(drift.FEATURES)


def test_shifted_style_is_repeatable_and_readable_as_drawings(mnist):
    first = shifted_style(mnist.x_train[:5], seed=3)
    again = shifted_style(mnist.x_train[:5], seed=3)
    other = shifted_style(mnist.x_train[:5], seed=4)
    assert first.shape == (5, 280, 280) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    digits = np.stack([to_mnist(p) for p in first])
    assert digits.shape == (5, 28, 28)
    plain = drift.image_features(mnist.x_train[:5])
    redrawn = drift.image_features(digits)
    assert (redrawn["stroke_thickness"] > plain["stroke_thickness"]).all()  # the style's thick strokes
