"""A node with no shared disk serves the registry's ``champion``, fetched by a follower.

On one machine, deployment writes ``models/latest.json`` and every predictor follows it.
On several machines only the MLflow server is shared, so each serving node runs a
follower: it asks which registered version the ``champion`` alias points to, fetches that
version's LiteRT export and its ``.keras`` file (logged beside it by the cycle, see
:mod:`mnist_hitl.learning.tracking`), checks each against the SHA-256 the version is
tagged with and that LiteRT loads the export, then writes the files and ``latest.json``
as deployment does: the files first, the pointer last, atomically. The node's predictors
switch by themselves. A cycle node (``MNIST_HITL_MODEL_SOURCE=registry``) syncs the same
way before each cycle, so it retrains from the registry's champion, not from whatever its
own disk last held. A file already here that passes its checksum is not fetched again. A
version registered without a Keras file (by an older mnist-hitl) is served alone
(``"keras": null``): a retraining cannot start from it.

Whatever fails (the registry down, a file whose checksum does not match, an export LiteRT
cannot load) changes nothing on disk: the node keeps serving what it has and says so
once. A refused file counts in ``mnist_hitl_model_load_failures_total``, like a
deployment a predictor cannot load, and is not fetched again until the champion moves.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from mnist_hitl import metrics
from mnist_hitl.config import Settings
from mnist_hitl.files import atomic_write
from mnist_hitl.model import registry
from mnist_hitl.model.pointer import Deployed, ModelFileError, deployed_model, write_pointer
from mnist_hitl.model.predictor import load_export, read_export

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """The registry cannot be asked, or names no champion a serving node can fetch."""


@dataclass(frozen=True)
class ChampionExport:
    """The files of the registered version the ``champion`` alias points to: its LiteRT export, its Keras file."""

    mlflow_version: str
    version: str  # the model version (``latest.json``'s), e.g. 20261127-101500-123
    run_id: str
    file: str  # model_<version>.tflite: the run's artifact litert/<file> and the file under models/
    sha256: str
    holdout_accuracy: float | None
    keras_file: str | None = None  # model_<version>.keras: the run's artifact keras/<file>; None: not registered
    keras_sha256: str | None = None


def registry_location(settings: Settings) -> str:
    """The tracking URI, without any password, for messages."""
    return re.sub(r"//[^/@]*@", "//", settings.tracking_uri)


def champion_export(settings: Settings) -> ChampionExport:
    """Ask the registry which version is the champion, and where its export is.

    Raises:
        RegistryError: the registry does not answer, has no champion yet, or its champion has no export
            (or names its files wrongly).
    """
    where = registry_location(settings)
    if not registry.reachable(settings):
        raise RegistryError(f"the model registry at {where} does not answer")
    try:
        found = registry.client(settings).get_model_version_by_alias(registry.REGISTERED_MODEL, registry.CHAMPION)
    except Exception as error:  # MLflow, SQLAlchemy and requests all raise their own kinds
        if getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"the model registry at {where} has no {registry.CHAMPION} yet") from None
        first_line = (str(error).splitlines() or [""])[0][:300]
        raise RegistryError(f"the model registry at {where} cannot be asked: {first_line}") from error
    tags = found.tags or {}
    version, file, sha256 = (
        tags.get(registry.VERSION_TAG),
        tags.get(registry.LITERT_FILE_TAG),
        tags.get(registry.LITERT_SHA256_TAG),
    )
    if not (version and file and sha256):
        raise RegistryError(
            f"{registry.CHAMPION} {registry.REGISTERED_MODEL} version {found.version} has no LiteRT export in the "
            "registry (registered by an older mnist-hitl): promote a newer version"
        )
    keras_file, keras_sha256 = tags.get(registry.KERAS_FILE_TAG), tags.get(registry.KERAS_SHA256_TAG)
    for name, suffix in ((file, ".tflite"), (keras_file, ".keras")):
        if name is not None and (Path(name).name != name or not name.endswith(suffix)):
            raise RegistryError(
                f"{registry.CHAMPION} version {found.version} names a file {name!r} that is no {suffix} file name"
            )
    if bool(keras_file) != bool(keras_sha256):
        raise RegistryError(f"{registry.CHAMPION} version {found.version} names a Keras file without its SHA-256")
    try:
        accuracy = float(tags[registry.ACCURACY_TAG])
    except (KeyError, ValueError):
        accuracy = None
    return ChampionExport(
        str(found.version), version, found.run_id, file, sha256, accuracy, keras_file or None, keras_sha256 or None
    )


def install(settings: Settings, wanted: ChampionExport) -> str | None:
    """Serve ``wanted`` here: its files (from the cache or the registry), checked, then ``latest.json``.

    Returns:
        The version now deployed, or None when it was deployed already (and intact).

    Raises:
        ModelFileError: a file does not match its checksum, or LiteRT cannot load the export
            (counted in the load-failure metric); nothing is changed.
        RegistryError: a file could not be fetched; nothing is changed.
    """
    models = Path(settings.models_dir)
    if _serving(models, wanted):
        return None
    wanted_files = [(registry.LITERT_ARTIFACTS, wanted.file, wanted.sha256)]
    if wanted.keras_file:
        wanted_files.append((registry.KERAS_ARTIFACTS, wanted.keras_file, wanted.keras_sha256))
    fetched = {}
    try:
        for folder, name, sha256 in wanted_files:  # the export first: no Keras file is fetched for a refused one
            content = _cached(models / name, sha256)
            if content is None:
                content = fetched[name] = _download(settings, wanted, f"{folder}/{name}")
            _check(models, wanted, name, content)
    except ModelFileError as error:
        metrics.record_model_load_failure(error.reason)
        raise
    for name in sorted(fetched, key=lambda n: n == wanted.file):  # the export, which predictors read, last
        atomic_write(models / name, fetched[name])
    # keras_file None: registered without one, nothing can retrain from it here
    write_pointer(models, wanted.version, wanted.file, b"", wanted.holdout_accuracy, wanted.keras_file, wanted.sha256)
    metrics.set_deployed_model(wanted.version)
    return wanted.version


def _check(models: Path, wanted: ChampionExport, name: str, content: bytes) -> None:
    """Refuse a file that does not match its registered checksum, or an export that LiteRT cannot load."""
    refused = f"refused {wanted.version} (registered version {wanted.mlflow_version}) from the registry"
    what = "export" if name == wanted.file else "Keras file"
    if hashlib.sha256(content).hexdigest() != (wanted.sha256 if name == wanted.file else wanted.keras_sha256):
        raise ModelFileError(
            f"{refused}: its {what} {name} does not match the SHA-256 the version is tagged with", "checksum_mismatch"
        )
    if name != wanted.file:
        return  # loading a Keras file takes TensorFlow, which a serving node never imports: its checksum will do
    deployed = Deployed(wanted.version, models / wanted.file, wanted.holdout_accuracy, None, wanted.sha256)
    try:
        load_export(deployed, content)
    except ModelFileError as error:
        raise ModelFileError(f"{refused}: {error}", error.reason) from error


def _serving(models: Path, wanted: ChampionExport) -> bool:
    """Whether ``latest.json`` names ``wanted`` already, and its files are intact (a damaged one is fetched again)."""
    try:
        deployed = deployed_model(models)
    except ModelFileError:
        return False
    if (deployed.version, deployed.tflite_path.name, deployed.tflite_sha256) != (
        wanted.version,
        wanted.file,
        wanted.sha256,
    ):
        return False
    if wanted.keras_file and (
        deployed.keras_path is None
        or deployed.keras_path.name != wanted.keras_file
        or _cached(deployed.keras_path, wanted.keras_sha256) is None
    ):
        return False
    try:
        read_export(deployed)
    except ModelFileError:
        return False
    return True


def _cached(path: Path, sha256: str) -> bytes | None:
    """The bytes of a file already here, if they match the checksum."""
    try:
        content = path.read_bytes()
    except OSError:
        return None
    return content if hashlib.sha256(content).hexdigest() == sha256 else None


def _download(settings: Settings, wanted: ChampionExport, artifact: str) -> bytes:
    """An artifact's bytes, fetched from the run (through the tracking server when it serves them)."""
    models = Path(settings.models_dir)
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=models) as folder:
        try:
            local = registry.client(settings).download_artifacts(wanted.run_id, artifact, folder)
            return Path(local).read_bytes()
        except Exception as error:  # the server gone, the artifact missing: MLflow and requests raise many kinds
            first_line = (str(error).splitlines() or [""])[0][:300]
            raise RegistryError(
                f"could not fetch {wanted.version}'s {artifact} from {registry_location(settings)}: {first_line}"
            ) from error


def sync_from_registry(settings: Settings) -> str | None:
    """One step of the follower: serve the registry's champion here if it is not served already.

    Returns:
        The version newly deployed, or None when ``latest.json`` already named the champion.

    Raises:
        RegistryError: the registry does not answer, has no champion, or its files could not be fetched.
        ModelFileError: the champion's files were refused (checksum, or LiteRT cannot load the export).
    """
    return install(settings, champion_export(settings))


class Follower:
    """The follower's memory between steps: the problem it last reported, the export it refused.

    Args:
        settings: the home (its ``models/``) and the tracking URI.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.refused: ChampionExport | None = None  # not fetched again until the champion (or its tags) change
        self.problem: str | None = None  # said once, until it changes or goes

    def step(self) -> str | None:
        """Sync once; a problem is logged (once) rather than raised. Returns the version newly deployed, if any."""
        try:
            wanted = champion_export(self.settings)
            if wanted == self.refused:
                return None
            try:
                version = install(self.settings, wanted)
            except ModelFileError:
                self.refused = wanted
                raise
        except (RegistryError, ModelFileError) as error:
            message = f"{error}; still serving {self._serving_version()}"
            if message != self.problem:
                log.error("%s", message)
            self.problem = message
            return None
        if self.problem is not None:
            log.info("following the registry at %s again", registry_location(self.settings))
        self.problem = self.refused = None
        if version is not None:
            log.info("now serving %s (registered version %s) from the registry", version, wanted.mlflow_version)
        return version

    def _serving_version(self) -> str:
        try:
            return deployed_model(self.settings.models_dir).version
        except ModelFileError:
            return "no model"


def follow(settings: Settings, stop_event: threading.Event | None = None) -> None:
    """Follow the registry's champion every ``registry_poll_seconds`` until ``stop_event`` is set.

    A registry that is down, or a champion that is refused, is said once in the log and tried again.
    """
    stop_event = stop_event or threading.Event()
    follower = Follower(settings)
    log.info("following the champion of %s every %g s", registry_location(settings), settings.registry_poll_seconds)
    while True:
        follower.step()
        if stop_event.wait(settings.registry_poll_seconds):
            return
