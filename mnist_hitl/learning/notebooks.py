"""What the loop's notebooks share: their settings, their label window, where their output goes.

The notebooks (``monitor.ipynb``, ``retrain.ipynb``) run two ways: by the cycle
through papermill, which passes the cycle's home, tracking URI and label window
as parameters, and by hand in JupyterLab, where every parameter left ``None``
comes from the settings and the store.
"""

from __future__ import annotations

from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.clock import timestamp_id
from mnist_hitl.config import Settings, get_settings
from mnist_hitl.learning.watermarks import newest_label_id, watermarks
from mnist_hitl.store import Store


def notebook_settings(home: str | None = None, tracking_uri: str | None = None) -> Settings:
    """Settings inside a notebook run by the cycle: the cycle's home and tracking URI win.

    The metrics this kernel records go to that home's metrics folder too.
    """
    settings = get_settings(home=home, mlflow_tracking_uri=tracking_uri)
    metrics.use_folder(settings.metrics_dir)
    return settings


def resolve_window(settings: Settings, since_label_id: int | None, through_label_id: int | None) -> tuple[int, int]:
    """(since, through) label ids: the given ones, or the store's watermark and newest label."""
    with Store(settings.db_path) as store:
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
