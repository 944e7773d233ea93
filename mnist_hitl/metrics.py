"""Prometheus metrics (placeholder hooks; the exporter comes with observability)."""

from __future__ import annotations


def record_prediction(label: int, model_version: str, latency_seconds: float) -> None:
    """Count one stored prediction and observe its latency."""


def record_label(label: int, kind: str) -> None:
    """Count one label given by a user."""


def record_refusal(reason: str) -> None:
    """Count one refused input or failed request, by reason."""
