"""The exploration notebook runs top to bottom with small parameters."""

from __future__ import annotations

import re

import nbformat
import papermill

from mnist_hitl.model import deployed_model
from mnist_hitl.resources import resource


def outputs(notebook) -> str:
    """Everything the executed cells printed or displayed as text (not the cells' source)."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


def test_explore_notebook_reads_the_deployed_model_and_draws(home_with_model, tmp_path):
    output = tmp_path / "explore.ipynb"
    papermill.execute_notebook(
        str(resource("notebooks") / "explore.ipynb"),
        str(output),
        parameters={"n_examples": 10},
        kernel_name="python3",
        progress_bar=False,
    )
    executed = nbformat.read(output, as_version=4)
    printed = outputs(executed)
    version = deployed_model(home_with_model.models_dir).version
    found = re.search(rf"model {re.escape(version)}: holdout accuracy (0\.\d+)", printed)
    assert found, printed[-2000:]
    assert float(found.group(1)) > 0.95
    pictures = sum("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
    assert pictures >= 2  # the digit grid and the drawing before and after preprocessing
