"""Fast prediction from the deployed model's LiteRT export, without TensorFlow.

The predictor reads ``models/latest.json`` to learn which version is deployed
and checks it before every prediction (a ``stat``, microseconds), so a running
app picks up a newly deployed model by itself.

The export is read into memory and checked against the SHA-256 that
``latest.json`` records, once, when it is (re)loaded. LiteRT would otherwise
memory-map the file, and a file rewritten or truncated under a map kills the
process with SIGBUS; held in memory, the model serves whatever happens to the
file afterwards. When a newly deployed model cannot be loaded, a running
predictor says so once (log and ``mnist_hitl_model_load_failures_total``),
keeps serving the model it holds, and tries again when the pointer changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_hitl import metrics
from mnist_hitl.model.pointer import DEPLOYED_POINTER, Deployed, ModelFileError, deployed_model, pointer_stamp

log = logging.getLogger(__name__)

INPUT_SHAPE = (1, 28, 28, 1)


@dataclass(frozen=True)
class LoadedModel:
    """A deployed model ready to predict."""

    deployed: Deployed
    # LiteRT reads the weights from these bytes for the interpreter's whole life (it keeps its own
    # reference too); held here so that nothing else ever backs the model, least of all a file.
    content: bytes
    interpreter: Any
    input_index: int
    output_index: int


def read_export(deployed: Deployed) -> bytes:
    """The deployed export's bytes, checked against the pointer's checksum."""
    path = deployed.tflite_path
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"the deployed model's export {path} is missing", "missing_export") from None
    except OSError as error:
        raise ModelFileError(f"the deployed model's export {path} is unreadable: {error}") from error
    if deployed.tflite_sha256 is None:
        log.warning(
            "%s has no checksum in %s (deployed by an older mnist-hitl): loading %s unchecked",
            deployed.version,
            DEPLOYED_POINTER,
            path.name,
        )
    elif hashlib.sha256(content).hexdigest() != deployed.tflite_sha256:
        raise ModelFileError(
            f"the deployed model's export {path} is corrupt: its SHA-256 does not match the "
            f"checksum in {DEPLOYED_POINTER} (changed after deployment)",
            "checksum_mismatch",
        )
    return content


@contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """Keep LiteRT's "Created TensorFlow Lite XNNPACK delegate" line, written on stderr below Python, off
    the terminal: a command prints its answer and nothing else. Whatever else reaches stderr meanwhile
    (another thread's) is passed on as it was."""
    with ExitStack() as stack:
        try:
            captured = stack.enter_context(tempfile.TemporaryFile())
        except OSError:  # no room even for that: the notice shows
            captured = None
        if captured is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().splitlines(True) if b"XNNPACK delegate" not in line]
            if kept:
                os.write(2, b"".join(kept))


def load_export(deployed: Deployed, content: bytes) -> LoadedModel:
    """An interpreter over an export's bytes; raises ModelFileError if it cannot read a 28x28 picture."""
    from ai_edge_litert.interpreter import Interpreter

    path, content = deployed.tflite_path, bytes(content)  # immutable: the interpreter reads it in place
    try:
        with _without_delegate_notice():
            interpreter = Interpreter(model_content=content, num_threads=1)
            interpreter.allocate_tensors()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    except Exception as error:  # LiteRT raises several kinds for a damaged flatbuffer (a garbled name: Unicode)
        raise ModelFileError(f"the deployed model's export {path} is corrupt: {error}") from error
    if len(inputs) != 1 or tuple(inputs[0]["shape"]) != INPUT_SHAPE or not outputs:
        raise ModelFileError(f"{path} does not take a 28x28 picture", "wrong_input_shape")
    return LoadedModel(deployed, content, interpreter, inputs[0]["index"], outputs[0]["index"])


def load_deployed(models_dir: Path) -> LoadedModel:
    """Read, check and load the deployed model; raises ModelFileError, with its reason, if it cannot."""
    deployed = deployed_model(models_dir)
    return load_export(deployed, read_export(deployed))


class Predictor:
    """Predicts digits with the deployed model, reloading when the deployment changes.

    Args:
        models_dir: the models folder (``$MNIST_HITL_HOME/models``).
    """

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._model: LoadedModel | None = None
        self._reported: tuple | None = None  # the last failure logged and counted: (pointer stamp, reason)
        # Batches run on a second interpreter of the same export, under their own lock: a long
        # scoring never holds up a single prediction, and resizing never touches the shared one.
        self._batch_lock = threading.Lock()
        self._batch: tuple[LoadedModel, Any, int] | None = None  # (model, interpreter, batch size)

    @property
    def version(self) -> str:
        """The version in use, after checking for a newer deployment."""
        self.refresh()
        return self._model.deployed.version

    @property
    def serving_version(self) -> str | None:
        """The version of the model held now, without looking for a newer one (None: none held)."""
        model = self._model
        return None if model is None else model.deployed.version

    def refresh(self, force: bool = False) -> bool:
        """Load the deployed model if the pointer changed since the last check; True if it (re)loaded.

        A broken new deployment leaves the model in use serving, and is tried again when the pointer
        changes (or at ``force``).

        Raises:
            ModelFileError: no model could be loaded and none is held; or, with ``force``, the
                deployed model could not be loaded (the one held keeps serving).
        """
        stamp = pointer_stamp(self.models_dir)
        with self._lock:
            if not force and self._model is not None and stamp == self._stamp:
                return False
            try:
                model = load_deployed(self.models_dir)
            except ModelFileError as error:
                if self._model is None:
                    self._report(stamp, error, str(error), raised=True)
                    raise
                self._stamp = stamp
                message = f"{error}; still serving version {self._model.deployed.version}"
                self._report(stamp, error, message, raised=force)
                if force:
                    raise ModelFileError(message, error.reason) from error
                return False
            self._model, self._stamp, self._reported = model, stamp, None
            return True

    def _report(self, stamp: tuple[int, int] | None, error: ModelFileError, message: str, raised: bool) -> None:
        """Count a failed load once per pointer, and log it unless the caller gets it (``raised``) and says it
        itself (a 503, the command's one line); nothing deployed yet is not a failure."""
        if (stamp, error.reason) == self._reported or (error.reason == "no_model" and self._model is None):
            return
        self._reported = (stamp, error.reason)
        metrics.record_model_load_failure(error.reason)
        log.log(logging.INFO if raised else logging.ERROR, "%s", message)

    def predict(self, digit: np.ndarray) -> tuple[np.ndarray, str]:
        """Probabilities of the ten digits for one preprocessed 28x28 picture.

        Returns:
            (probabilities of shape (10,), the model version that produced them).
        """
        self.refresh()
        x = np.asarray(digit, dtype=np.float32).reshape(INPUT_SHAPE)
        with self._lock:
            model = self._model
            model.interpreter.set_tensor(model.input_index, x)
            model.interpreter.invoke()
            probabilities = model.interpreter.get_tensor(model.output_index)[0].copy()
        return probabilities, model.deployed.version

    def predict_batch(self, digits: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, str]:
        """Probabilities of the ten digits for many preprocessed 28x28 pictures, all by one model.

        Returns:
            (probabilities of shape (n, 10), the model version that produced them).
        """
        self.refresh()
        model = self._model
        x = np.asarray(digits, dtype=np.float32).reshape(-1, *INPUT_SHAPE[1:])
        with self._batch_lock:
            interpreter, size = self._batch_interpreter(model, batch_size)
            chunks = []
            for start in range(0, len(x), size):
                chunk = x[start : start + size]
                padded = np.zeros((size, *INPUT_SHAPE[1:]), dtype=np.float32)
                padded[: len(chunk)] = chunk
                interpreter.set_tensor(model.input_index, padded)
                interpreter.invoke()
                chunks.append(interpreter.get_tensor(model.output_index)[: len(chunk)].copy())
        probabilities = np.concatenate(chunks) if chunks else np.zeros((0, 10), dtype=np.float32)
        return probabilities, model.deployed.version

    def _batch_interpreter(self, model: LoadedModel, batch_size: int) -> tuple[Any, int]:
        """The batch interpreter of ``model`` (made on first use); one picture at a time if it cannot resize."""
        if self._batch is not None and self._batch[0] is model and self._batch[2] in (batch_size, 1):
            return self._batch[1], self._batch[2]
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=model.content, num_threads=min(4, os.cpu_count() or 1))
        try:
            interpreter.resize_tensor_input(model.input_index, (batch_size, *INPUT_SHAPE[1:]), strict=True)
            with _without_delegate_notice():
                interpreter.allocate_tensors()
        except Exception as error:  # an export with a fixed batch of one
            log.warning("%s cannot take a batch (%s): scoring one picture at a time", model.deployed.version, error)
            interpreter = Interpreter(model_content=model.content, num_threads=1)
            interpreter.allocate_tensors()
            batch_size = 1
        self._batch = (model, interpreter, batch_size)
        return interpreter, batch_size
