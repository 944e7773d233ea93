"""The exploration notebook runs top to bottom with small parameters."""

from __future__ import annotations

from pathlib import Path

import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_explore_notebook_runs_against_a_deployed_model(home_with_model, tmp_path):
    output = tmp_path / "explore.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "explore.ipynb"), str(output), parameters={"n_examples": 10},
                               kernel_name="python3", progress_bar=False)
    text = output.read_text()
    assert "holdout accuracy" in text and "image/png" in text
