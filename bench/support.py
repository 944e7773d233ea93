"""What the benchmark scripts share: a temporary home with a deployed model, the results, the servers they start.

The scripts run as ``.venv/bin/python bench/<name>.py``: this folder comes first on ``sys.path`` and
they ``import support``. The tests import it too, as ``bench.support`` (pytest puts the checkout on
``sys.path``), for the two things they start as the benchmarks do: a PostgreSQL server and
headless Chromium. So there is one of each, and nothing here imports the tests. ``mnist_hitl`` is
imported inside the functions, once a script has chosen its ``MNIST_HITL_HOME``.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CHROMIUM = os.environ.get("MNIST_HITL_CHROMIUM", "/usr/bin/chromium")
# No sandbox (it may run as root in a container), no GPU, nothing fetched in the background.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def temporary_home(prefix: str = "mnist-hitl-bench-") -> Path:
    """A new, empty folder to be a home (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def deployed_models(home: Path | None = None) -> Path | None:
    """The models folder of ``home`` (default: ``MNIST_HITL_HOME``'s) if it holds a usable deployed model."""
    from mnist_hitl.config import get_settings
    from mnist_hitl.model import ModelFileError, load_deployed

    models = get_settings(home=home).models_dir
    try:
        load_deployed(models)
    except ModelFileError:
        return None
    return models


def train_unless_deployed(home: Path, epochs: int | None = None) -> None:
    """Train and deploy the first model in ``home`` unless one is deployed there (a minute at the default epochs)."""
    if deployed_models(home) is not None:
        return
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.retrain.training import train_first_model

    print(f"model: none deployed in {home}, training one")
    train_first_model(get_settings(home=home), epochs=epochs, progress=False)


def home_with_model(models: Path | None, prefix: str = "mnist-hitl-bench-", epochs: int | None = None) -> Path:
    """A temporary home, made this process's ``MNIST_HITL_HOME``, with a deployed model.

    Args:
        models: a models folder with a deployed model, copied into the home; without one, the
            first model is trained there now.
        prefix: the temporary folder's name starts with it.
        epochs: the training's epochs, when there is one (default: ``MNIST_HITL_EPOCHS``).
    """
    home = temporary_home(prefix)
    os.environ["MNIST_HITL_HOME"] = str(home)
    if models is not None:
        shutil.copytree(models, home / "models")
        print(f"model: copied from {models}")
    train_unless_deployed(home, epochs)
    return home


def machine() -> dict:
    """What a timing depends on besides the code: the cores, and how busy they were over the last minute."""
    return {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}


def report(name: str, figures: dict, decimals: int | None = None) -> Path:
    """Print the figures, one a line, and write them as ``bench/results/<name>.json``; returns its path.

    Args:
        decimals: the places floats are printed to (default: as they are; the file has them all).
    """
    width = max(map(len, figures))
    for key, value in figures.items():
        shown = f"{value:.{decimals}f}" if decimals is not None and isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    return write_results(name, figures)


def write_results(name: str, figures: dict) -> Path:
    """Write the figures as ``bench/results/<name>.json``; returns its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2))
    return path


class Postgres:
    """A PostgreSQL cluster of Debian's ``postgresql`` package, in a temporary folder on a free port.

    ``start``, then ``new_database`` for each user of it, then ``stop``. ``initdb`` and ``pg_ctl``
    refuse to run as root: as root they run as the ``postgres`` user the package creates.

    Args:
        durable: flush every commit to disk, as a production server does (the tests need not).
    """

    def __init__(self, durable: bool = False) -> None:
        from mnist_hitl.app.command import free_port

        self.durable = durable
        # Not under pytest's temporary folders: those are private to root, and the server runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="mnist-hitl-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.bin = _postgres_binaries()
        self._names = itertools.count(1)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")

    def start(self) -> Postgres:
        """Create the cluster and start its server; raises RuntimeError, saying why, if it cannot."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self.folder.chmod(0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
        log = str(self.folder / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        return self

    def stop(self) -> None:
        """Stop the server and remove the cluster."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database (the form ``MNIST_HITL_DATABASE_URL`` takes)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "test") -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _postgres_binaries() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (as .ci/run does)")
    return Path(found[-1]).parent
