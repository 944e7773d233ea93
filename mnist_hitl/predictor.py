"""Fast prediction from the deployed model's LiteRT export, without TensorFlow.

The predictor reads ``models/latest.json`` to learn which version is deployed
and checks it before every prediction (a ``stat``, microseconds), so a running
app picks up a newly deployed model by itself.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEPLOYED_POINTER = "latest.json"


class ModelFileError(RuntimeError):
    """No deployed model, or its files are missing or corrupt."""


@dataclass(frozen=True)
class Deployed:
    version: str
    tflite_path: Path
    holdout_accuracy: float | None


def deployed_model(models_dir: Path) -> Deployed:
    """What ``latest.json`` says is deployed; raises ModelFileError if nothing is."""
    pointer = Path(models_dir) / DEPLOYED_POINTER
    try:
        info = json.loads(pointer.read_text())
        return Deployed(info["version"], Path(models_dir) / info["tflite"], info.get("holdout_accuracy"))
    except FileNotFoundError:
        raise ModelFileError(
            f"no model is deployed in {models_dir}: run `mnist-hitl init` to train the first one"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{pointer} is corrupt: {error}") from error


class Predictor:
    """Predicts digits with the deployed model, reloading when the deployment changes.

    Args:
        models_dir: the models folder (``$MNIST_HITL_HOME/models``).
    """

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._interpreter = None
        self._deployed: Deployed | None = None

    @property
    def version(self) -> str:
        """The version in use, after checking for a newer deployment."""
        self.refresh()
        return self._deployed.version

    def refresh(self, force: bool = False) -> bool:
        """Load the deployed model if it changed since the last check; True if it (re)loaded."""
        pointer = self.models_dir / DEPLOYED_POINTER
        try:
            stat = pointer.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if not force and stamp is not None and stamp == self._stamp:
                return False
            deployed = deployed_model(self.models_dir)
            self._interpreter = _load_interpreter(deployed.tflite_path)
            self._deployed, self._stamp = deployed, stamp
            return True

    def predict(self, digit: np.ndarray) -> tuple[np.ndarray, str]:
        """Probabilities of the ten digits for one preprocessed 28x28 picture.

        Returns:
            (probabilities of shape (10,), the model version that produced them).
        """
        self.refresh()
        x = np.asarray(digit, dtype=np.float32).reshape(1, 28, 28, 1)
        with self._lock:
            interpreter, version = self._interpreter, self._deployed.version
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
            probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].copy()
        return probabilities, version


def _load_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    if not path.is_file():
        raise ModelFileError(f"the deployed model's export {path} is missing")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelFileError(f"the deployed model's export {path} is corrupt: {error}") from error
    if tuple(interpreter.get_input_details()[0]["shape"]) != (1, 28, 28, 1):
        raise ModelFileError(f"{path} does not take a 28x28 picture")
    return interpreter
