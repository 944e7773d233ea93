"""The deployed-model format: the files under ``models/`` and the pointer that names the deployed one.

A model version is two files, ``model_<version>.keras`` (what training continues from) and its
LiteRT export ``model_<version>.tflite`` (what every predictor serves). ``latest.json`` names the
deployed version, its files and the export's SHA-256. It is the one source of truth, replaced by
atomic rename and only after the files it names are whole (see :func:`write_pointer`), so a
killed process leaves the old model serving. This module is the only one that spells these names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from mnist_hitl.clock import utc_now
from mnist_hitl.files import atomic_write

DEPLOYED_POINTER = "latest.json"


class ModelFileError(RuntimeError):
    """No deployed model, or its files are missing or corrupt.

    Args:
        message: what is wrong, for a person.
        reason: one of :data:`mnist_hitl.names.LOAD_FAILURE_REASONS`, for the metric.
    """

    def __init__(self, message: str, reason: str = "unloadable") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ModelFiles:
    """The two files of one model version, under a models folder."""

    version: str
    keras_path: Path
    tflite_path: Path


def model_files(models_dir: Path, version: str) -> ModelFiles:
    """Where the files of ``version`` live (or will) under ``models_dir``."""
    models_dir = Path(models_dir)
    return ModelFiles(version, models_dir / f"model_{version}.keras", models_dir / f"model_{version}.tflite")


def partial_keras_path(models_dir: Path, version: str) -> Path:
    """Where a ``.keras`` file is written before its atomic rename into place."""
    return Path(models_dir) / f".model_{version}.partial.keras"


def export_name(file: str) -> str:
    """The LiteRT export's file name beside a model file (``model_<v>.keras`` -> ``model_<v>.tflite``)."""
    return Path(file).with_suffix(".tflite").name


@dataclass(frozen=True)
class Deployed:
    version: str
    tflite_path: Path
    holdout_accuracy: float | None
    keras_path: Path | None = None
    tflite_sha256: str | None = None  # None: deployed before checksums were recorded


def deployed_model(models_dir: Path) -> Deployed:
    """What ``latest.json`` says is deployed; raises ModelFileError if nothing is."""
    models_dir = Path(models_dir)
    pointer = models_dir / DEPLOYED_POINTER
    try:
        info = json.loads(pointer.read_text())
        keras = info.get("keras")
        return Deployed(
            str(info["version"]),
            models_dir / info["tflite"],
            info.get("holdout_accuracy"),
            models_dir / keras if keras else None,
            info.get("tflite_sha256"),
        )
    except FileNotFoundError:
        raise _missing_pointer(models_dir) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFileError(f"{pointer} is corrupt: {error!r}", "bad_pointer") from error


def _missing_pointer(models_dir: Path) -> ModelFileError:
    """No pointer: nothing was ever deployed here, or the pointer was lost and the models are still on disk."""
    exports = sorted(models_dir.glob("model_*.tflite"))
    if not exports:
        return ModelFileError(
            f"no model is deployed in {models_dir}: run `mnist-hitl init` to train the first one", "no_model"
        )
    newest = exports[-1].stem.removeprefix("model_")
    return ModelFileError(
        f"{models_dir / DEPLOYED_POINTER}, which names the deployed model, is missing, though {len(exports)} model"
        f" version{'s are' if len(exports) > 1 else ' is'} in {models_dir} (the newest {newest}): restore"
        f" {DEPLOYED_POINTER} from a backup, or run `mnist-hitl init` to train and deploy a new model",
        "bad_pointer",
    )


def write_pointer(
    models_dir: Path,
    version: str,
    tflite_file: str,
    export: bytes,
    holdout_accuracy: float | None,
    keras_file: str | None,
    tflite_sha256: str | None = None,
) -> dict:
    """Name ``version`` as the deployed model, atomically; its files must be in place already.

    Args:
        export: the export's bytes, whose SHA-256 the pointer records (unless ``tflite_sha256`` is given).
        keras_file: None when no Keras file is deployed beside the export (nothing can retrain from it here).

    Returns:
        The pointer's contents.
    """
    pointer = {
        "version": version,
        "keras": keras_file,
        "tflite": tflite_file,
        "tflite_sha256": tflite_sha256 or hashlib.sha256(export).hexdigest(),
        "holdout_accuracy": holdout_accuracy,
        "deployed_at": utc_now(),
    }
    atomic_write(Path(models_dir) / DEPLOYED_POINTER, json.dumps(pointer, indent=2).encode())
    return pointer


def pointer_stamp(models_dir: Path) -> tuple[int, int] | None:
    """The pointer's modification time and inode (None: no pointer): a ``stat``, cheap enough before every prediction.

    A deployment replaces the pointer by rename, so its inode changes even within one clock tick.
    """
    try:
        status = (Path(models_dir) / DEPLOYED_POINTER).stat()
    except FileNotFoundError:
        return None
    return status.st_mtime_ns, status.st_ino
