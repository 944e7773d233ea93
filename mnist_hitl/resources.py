"""Where the project's files that are not Python live: notebooks, flows, dashboards, the Procfile.

In a source checkout (an editable install) they are the folders at the top of
the repository; an installed wheel carries them as data files, which pip puts
under ``share/mnist-hitl`` in the data folder of its install scheme: the
environment's prefix (a virtualenv's root, ``/usr/local`` in the Docker image),
or the user base for ``pip install --user`` (``[tool.setuptools.data-files]`` in
``pyproject.toml``). Everything that needs one asks :func:`resource`, so no
module walks up from its own file.
"""

from __future__ import annotations

import site
import sys
import sysconfig
from pathlib import Path

NAMES = ("notebooks", "flows", "dashboards", "Procfile")
SHARE = Path("share") / "mnist-hitl"


def _roots() -> list[Path]:
    """The folders to look in, the source checkout first."""
    checkout = Path(__file__).resolve().parent.parent
    roots = [checkout] if (checkout / "pyproject.toml").is_file() else []
    prefixes = [sys.prefix, sysconfig.get_path("data")]
    if site.ENABLE_USER_SITE:
        prefixes.append(sysconfig.get_path("data", sysconfig.get_preferred_scheme("user")))
    return roots + [Path(prefix) / SHARE for prefix in dict.fromkeys(prefixes)]


def resource(name: str) -> Path:
    """The path of one of the project's resources (``notebooks``, ``flows``, ``dashboards``, ``Procfile``).

    Raises:
        FileNotFoundError: the installation does not carry it.
    """
    if name.split("/")[0] not in NAMES:
        raise ValueError(f"{name!r} is not one of the project's resources {NAMES}")
    roots = _roots()
    for root in roots:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{name} is not installed with mnist-hitl (looked in {', '.join(map(str, roots))})")


def in_checkout(path: Path) -> bool:
    """Whether a resource is the source checkout's own file (editable), not an installed copy."""
    checkout = Path(__file__).resolve().parent.parent
    return (checkout / "pyproject.toml").is_file() and Path(path).resolve().is_relative_to(checkout)
