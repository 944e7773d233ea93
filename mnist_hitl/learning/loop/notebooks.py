"""What the loop's notebooks share: their settings, their label window, where their output goes.

The notebooks (``monitor.ipynb``, ``retrain.ipynb``) run two ways: by the cycle
through papermill, which passes the cycle's home, tracking URI and label window
as parameters, and by hand in JupyterLab, where every parameter left ``None``
comes from the settings and the store. Each notebook is an entry point: its first
cell opens the store (:func:`mnist_hitl.store.open_store`) and its last closes it.

A retraining run by hand is a dry run: the cycle alone deploys, because only it
holds the cycle lock (a hand run would race a scheduled one), advances the
watermarks and hands the notebook an MLflow run. The challenger of a hand run is
trained, judged and kept on file as a ``candidate``; nothing is deployed and nothing
goes to MLflow, and the notebook says so at its top and in its verdict.

An executed notebook is also rendered as one self-contained HTML page (images
inline, no script fetched from the internet): MLflow's artifact view shows HTML,
not ``.ipynb``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.clock import timestamp_id
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.loop.watermarks import newest_label_id, watermarks
from mnist_hitl.store import Store

log = logging.getLogger(__name__)

# nbconvert's lab template without its <script> tags (require.js, MathJax, Mermaid from a CDN).
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
# The retraining's sizes a hand run takes from the settings (the cycle passes them explicitly).
RETRAIN_SETTINGS = ("n_trials", "epochs_per_trial", "final_epochs", "oversample")


def notebook_settings(home: str | None = None, tracking_uri: str | None = None) -> Settings:
    """Settings inside a notebook run by the cycle: the cycle's home and tracking URI win.

    The metrics this kernel records go to that home's metrics folder too.
    """
    settings = get_settings(home=home, mlflow_tracking_uri=tracking_uri)
    metrics.use_folder(settings.metrics_dir)
    return settings


def give_way(niceness: int) -> None:
    """Lower this process's CPU priority by ``niceness`` (0: leave it): a forced cycle's monitor, which runs
    beside the retraining, takes the cores only when the training leaves them idle."""
    if niceness > 0:
        os.nice(niceness)


def resolve_window(store: Store, since_label_id: int | None, through_label_id: int | None) -> tuple[int, int]:
    """(since, through) label ids: the given ones, or the store's watermark and newest label."""
    since = watermarks(store).retrained_through if since_label_id is None else int(since_label_id)
    through = newest_label_id(store) if through_label_id is None else int(through_label_id)
    return since, through


def default_output_dir(settings: Settings, kind: str) -> Path:
    return settings.runs_dir / f"{kind}-{timestamp_id()}"


def save_figure(figure, path: Path | str):
    """Save a figure as PNG and return it as an image a notebook displays."""
    from IPython.display import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return Image(str(path))


def retrain_sizes(settings: Settings, **given: int | None) -> tuple[int, ...]:
    """``n_trials, epochs_per_trial, final_epochs, oversample``: the given ones, else the settings'."""
    return tuple(int(getattr(settings, name) if given.get(name) is None else given[name]) for name in RETRAIN_SETTINGS)


def retrain_mode(mlflow_run_id: str | None, deploy: bool) -> tuple[bool, str]:
    """Whether this retraining may deploy its challenger, and a line of Markdown saying what it does."""
    if not mlflow_run_id:
        return False, (
            "**Dry run** (run by hand: no `mlflow_run_id`). The challenger is trained, judged and kept "
            "on file as a candidate; **nothing is deployed and nothing is logged to MLflow**. "
            "`mnist-hitl cycle --force-retrain` retrains for real, recorded in MLflow."
        )
    if not deploy:
        return False, (
            f"**Dry run** (`deploy=False`), logged to MLflow run `{mlflow_run_id}`: the challenger "
            "is kept on file as a candidate whatever the verdict."
        )
    return True, (
        f"Run by the learning cycle, logged to MLflow run `{mlflow_run_id}`: the challenger is "
        "deployed if the promotion rule says so."
    )


def html_copy(notebook: Path | str) -> Path | None:
    """Render an executed notebook as a self-contained HTML page beside it (inputs kept, images inline).

    Returns:
        The page, or None when the notebook is missing or cannot be rendered (logged, never raised:
        the notebook itself is the record).
    """
    notebook = Path(notebook)
    if not notebook.is_file():
        return None
    try:
        import nbformat
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter

        exporter = HTMLExporter(
            embed_images=True,
            extra_loaders=[DictLoader({"offline.html.j2": _OFFLINE_TEMPLATE})],
            template_file="offline.html.j2",
        )
        body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    except Exception as error:
        log.warning("could not render %s as HTML: %s", notebook, error)
        return None
    page = notebook.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page
