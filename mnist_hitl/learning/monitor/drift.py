"""Drift of the users' drawings against the training data.

Two measures, both on per-image features of the 28x28 pictures the model saw:

* the drift score the retrain decision uses: the Wasserstein-1 distance between
  the distributions of mean ink intensity of the recent drawings and of the
  training digits, divided by the training digits' standard deviation (so 0.1
  means "moved by a tenth of the usual spread"; the same "normed Wasserstein"
  Evidently applies to large references, so both agree on that feature);
* an Evidently 0.7 data-drift report over all the features below, saved as HTML.

The score has a floor set by sample size: two samples of the *same* digits
differ by a median 0.25 at 20 drawings, 0.17 at 50 and 0.06 at 300 (measured on
the bundled MNIST), so with few labels a low threshold fires on noise alone.

Drawings drifted on purpose, for tests and benchmarks, are made by
:mod:`mnist_hitl.learning.synthetic`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import wasserstein_distance

from mnist_hitl.config import export
from mnist_hitl.preprocess import MNIST_SIZE

INK = 0.5  # a pixel at least this bright is ink
PIXELS = MNIST_SIZE * MNIST_SIZE
N_COMPONENTS = 3
FEATURES = (
    "mean_intensity",
    "ink_fraction",
    "bbox_height",
    "bbox_width",
    "com_offset",
    "stroke_thickness",
    *(f"pc{i + 1}" for i in range(N_COMPONENTS)),
)


def as_unit(images: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28) as float32 in [0, 1] (uint8 0-255 are scaled)."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return x.reshape(-1, 28, 28)


@dataclass(frozen=True)
class PixelComponents:
    """Principal components of the training digits' pixels (fitted once on the reference)."""

    mean: np.ndarray
    components: np.ndarray  # (k, 784)

    @classmethod
    def fit(cls, images: np.ndarray, k: int = N_COMPONENTS) -> PixelComponents:
        x = as_unit(images).reshape(len(images), PIXELS).astype(np.float64)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(mean, vt[:k])

    def transform(self, images: np.ndarray) -> np.ndarray:
        x = as_unit(images).reshape(len(images), PIXELS).astype(np.float64)
        return (x - self.mean) @ self.components.T


def image_features(images: np.ndarray, components: PixelComponents | None = None) -> pd.DataFrame:
    """Per-image features of 28x28 digits, one row per image.

    Columns: ``mean_intensity`` (mean pixel, 0-1), ``ink_fraction`` (share of ink
    pixels), ``bbox_height`` / ``bbox_width`` (pixels spanned by the ink),
    ``com_offset`` (distance in pixels of the centre of mass from the centre),
    ``stroke_thickness`` (ink area over half the ink's boundary length, about the
    stroke width in pixels) and ``pc1``... (projections on the training digits'
    principal components, when ``components`` is given).
    """
    x = as_unit(images)
    ink = x >= INK
    rows = []
    centre = MNIST_SIZE / 2  # where preprocessing puts the centre of mass, as MNIST does
    for picture, mask in zip(x, ink):
        area = int(mask.sum())
        if area:
            ys, xs = np.nonzero(mask)
            height, width = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
            boundary = int((mask & ~ndimage.binary_erosion(mask)).sum())
            thickness = 2.0 * area / boundary
        else:
            height = width = 0
            thickness = 0.0
        total = float(picture.sum())
        if total > 0:
            cy, cx = ndimage.center_of_mass(picture)
            offset = float(np.hypot(cy - centre, cx - centre))
        else:
            offset = 0.0
        rows.append((float(picture.mean()), area / picture.size, height, width, offset, thickness))
    frame = pd.DataFrame(rows, columns=list(FEATURES[:6]), dtype=float)
    if components is not None:
        projected = components.transform(x) if len(x) else np.zeros((0, len(components.components)))
        for i in range(projected.shape[1]):
            frame[f"pc{i + 1}"] = projected[:, i]
    return frame


def intensity_drift(current: np.ndarray, reference: np.ndarray) -> float:
    """The drift score: normed Wasserstein distance of the mean ink intensity distributions.

    Args:
        current: recent drawings (n, 28, 28).
        reference: training digits (m, 28, 28).

    Returns:
        W1(current, reference) / std(reference) of the per-image mean intensity;
        NaN when there are no current drawings.
    """
    cur = as_unit(current).reshape(len(current), PIXELS).mean(axis=1)
    ref = as_unit(reference).reshape(len(reference), PIXELS).mean(axis=1)
    return normed_wasserstein(cur, ref)


def normed_wasserstein(current: np.ndarray, reference: np.ndarray) -> float:
    """W1 distance between two samples divided by the reference's standard deviation."""
    if len(current) == 0 or len(reference) == 0:
        return float("nan")
    spread = float(np.std(reference)) or 1.0
    return float(wasserstein_distance(current, reference) / spread)


@dataclass
class DriftSummary:
    """What the Evidently report found."""

    share: float  # share of features whose drift exceeds the threshold
    drifted: list[str] = field(default_factory=list)
    per_feature: dict[str, float] = field(default_factory=dict)  # normed Wasserstein per feature
    html_path: Path | None = None

    def as_json(self) -> dict:
        return {
            "share": self.share,
            "drifted": self.drifted,
            "per_feature": self.per_feature,
            "html_path": str(self.html_path) if self.html_path else None,
        }


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, threshold: float, html_path: Path | None = None
) -> DriftSummary:
    """An Evidently data-drift report of the feature tables, optionally saved as HTML.

    Every feature is tested with the normed Wasserstein distance against
    ``threshold`` (the same measure as the drift score, so the report explains it).
    """

    export("DO_NOT_TRACK", "1", keep_existing=True)  # evidently's usage telemetry stays off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        columns = [c for c in reference.columns if c in current.columns]
        definition = DataDefinition(numerical_columns=columns)
        preset = DataDriftPreset(columns=columns, num_method="wasserstein", num_threshold=threshold)
        result = Report([preset]).run(
            current_data=Dataset.from_pandas(current[columns].reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns].reset_index(drop=True), data_definition=definition),
        )
    per_feature: dict[str, float] = {}
    share = float("nan")
    for metric in result.dict()["metrics"]:
        config = metric.get("config", {})
        if config.get("type", "").endswith("ValueDrift"):
            per_feature[config["column"]] = float(metric["value"])
        elif config.get("type", "").endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    if html_path is not None:
        html_path = Path(html_path)
        html_path.parent.mkdir(parents=True, exist_ok=True)
        result.save_html(str(html_path))  # evidently writes nothing when given a Path
    drifted = sorted(name for name, value in per_feature.items() if value >= threshold)
    return DriftSummary(share, drifted, per_feature, html_path)


def feature_distances(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """Normed Wasserstein distance of every shared feature, without Evidently."""
    return {
        c: normed_wasserstein(current[c].to_numpy(), reference[c].to_numpy())
        for c in reference.columns
        if c in current.columns
    }


def plot_features(reference: pd.DataFrame, current: pd.DataFrame, columns: tuple[str, ...] = FEATURES[:6]):
    """Histograms of features, training digits against recent drawings (densities)."""
    from matplotlib.figure import Figure

    columns = [c for c in columns if c in reference.columns]
    figure = Figure(figsize=(2.6 * len(columns), 2.6))
    axes = figure.subplots(1, len(columns))
    for ax, column in zip(np.atleast_1d(axes), columns):
        values = np.concatenate([reference[column].to_numpy(), current[column].to_numpy()])
        bins = np.histogram_bin_edges(values, bins=20) if len(values) else 10
        ax.hist(reference[column], bins=bins, density=True, alpha=0.5, label="training")
        if len(current):
            ax.hist(current[column], bins=bins, density=True, alpha=0.5, label="recent")
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    figure.tight_layout()
    return figure
