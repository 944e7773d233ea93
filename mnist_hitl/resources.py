"""Where the project's files that are not Python live: notebooks, flows, dashboards, the Procfile.

In a source checkout (an editable install) they are the folders at the top of
the repository; an installed wheel carries them as data files under
``<prefix>/share/mnist-hitl`` (``[tool.setuptools.data-files]`` in
``pyproject.toml``). Everything that needs one asks :func:`resource`, so no
module walks up from its own file.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

NAMES = ("notebooks", "flows", "dashboards", "Procfile")
SHARE = Path("share") / "mnist-hitl"


def _roots() -> list[Path]:
    checkout = Path(__file__).resolve().parent.parent
    prefixes = [Path(sys.prefix), Path(sysconfig.get_path("data"))]
    return [checkout, *(prefix / SHARE for prefix in prefixes)]


def resource(name: str) -> Path:
    """The path of one of the project's resources (``notebooks``, ``flows``, ``dashboards``, ``Procfile``).

    Raises:
        FileNotFoundError: the installation does not carry it.
    """
    if name.split("/")[0] not in NAMES:
        raise ValueError(f"{name!r} is not one of the project's resources {NAMES}")
    for root in _roots():
        candidate = root / name
        if candidate.exists() and (root != _roots()[0] or (root / "pyproject.toml").is_file()):
            return candidate
    raise FileNotFoundError(f"{name} is not installed with mnist-hitl (looked in {', '.join(map(str, _roots()))})")
