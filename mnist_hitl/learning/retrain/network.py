"""The CNN: build, train, evaluate, save with its fast export.

TensorFlow is imported inside the functions that need it: importing it costs
about 7 s and 650 MB, so the app and the CLI's predict path (which use
:mod:`mnist_hitl.model.predictor`) never pay for it.

Files, under the models folder:
    model_<version>.keras    the trained model (immutable once written)
    model_<version>.tflite   its LiteRT export, read by the fast predictor

Deploying a saved model is :mod:`mnist_hitl.learning.retrain.deployment`'s job.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_hitl import config
from mnist_hitl.clock import timestamp_id
from mnist_hitl.files import atomic_write
from mnist_hitl.model import ModelFileError, model_files
from mnist_hitl.model.pointer import partial_keras_path


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of one training run."""

    epochs: int = 15
    batch_size: int = 64
    learning_rate: float = 2e-3
    dropout: float = 0.3
    augment: bool = True
    seed: int = 0


@dataclass(frozen=True)
class SavedModel:
    """A model written to disk: its version and files."""

    version: str
    keras_path: Path
    tflite_path: Path


def keras_module():
    """Keras, imported on first use, with TensorFlow's C++ log quiet."""
    config.export("TF_CPP_MIN_LOG_LEVEL", "2", keep_existing=True)
    import keras

    return keras


def load_keras_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full MNIST through ``keras.datasets.mnist.load_data()`` (downloads once; needs the network)."""
    keras = keras_module()
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def build_model(learning_rate: float = 2e-3, dropout: float = 0.3):
    """A small CNN for 28x28x1 inputs in [0, 1], softmax over the ten digits."""
    keras = keras_module()
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu", padding="same"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu", padding="same"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(dropout),
            layers.Dense(128, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def as_input(images: np.ndarray) -> np.ndarray:
    """Images (n, 28, 28) as uint8 0-255 or float 0-1 -> float32 (n, 28, 28, 1) in [0, 1]."""
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return x.reshape(-1, 28, 28, 1)


class _ProgressBar:
    """A tqdm bar over all training batches, as a Keras callback."""

    def __new__(cls, total: int, description: str):
        keras = keras_module()
        from tqdm.auto import tqdm

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.bar = tqdm(total=total, desc=description, unit="batch")

            def on_train_batch_end(self, batch, logs=None):
                self.bar.update(1)
                if logs and "accuracy" in logs:
                    self.bar.set_postfix(accuracy=f"{float(logs['accuracy']):.3f}", refresh=False)

            def on_train_end(self, logs=None):
                self.bar.close()

        return Callback()


def train_model(
    x: np.ndarray,
    y: np.ndarray,
    params: TrainParams = TrainParams(),
    progress: bool = True,
    description: str = "training",
    initial_weights: list | None = None,
):
    """Train a CNN, from scratch or from ``initial_weights`` (a fine-tune).

    Args:
        x: images (n, 28, 28), uint8 or float in [0, 1].
        y: digits (n,).
        params: hyper-parameters; the seed fixes the initialisation, shuffling and augmentation.
        progress: show a progress bar.
        description: the progress bar's label.
        initial_weights: weights to start from (``model.get_weights()`` of another model).

    Returns:
        The trained Keras model.
    """
    keras = keras_module()
    import tensorflow as tf

    # Same seed, same data -> the same model: without this, TensorFlow's CPU kernels
    # reorder float sums and the holdout accuracy wandered 98.1-98.9% between identical runs.
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(params.seed)
    model = build_model(params.learning_rate, params.dropout)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    x = as_input(x)
    y = np.asarray(y, dtype=np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=params.seed)
    dataset = dataset.batch(params.batch_size)
    if params.augment:
        augment = keras.Sequential(
            [
                keras.layers.RandomRotation(0.04, fill_mode="constant", seed=params.seed),
                keras.layers.RandomZoom(0.1, fill_mode="constant", seed=params.seed),
                keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=params.seed),
            ]
        )
        dataset = dataset.map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    callbacks = [_ProgressBar(params.epochs * len(dataset), description)] if progress else []
    model.fit(dataset, epochs=params.epochs, verbose=0, callbacks=callbacks, shuffle=False)
    return model


def blend_with(model, start_weights: list, start_share: float):
    """Move a fine-tuned model's weights back towards the weights it started from, in place.

    Each weight becomes ``start_share * start + (1 - start_share) * fine-tuned`` (weight-space
    ensembling, as WiSE-FT does: Wortsman et al., CVPR 2022): the fine-tune's gains on the new
    drawings largely stay while what the start knew (MNIST) is forgotten less. The network has no
    batch normalisation, so every weight interpolates. ``start_share`` 0 leaves the model as it is.
    """
    if not 0.0 <= start_share <= 1.0:
        raise ValueError(f"the start's share of the weights must be in [0, 1], not {start_share}")
    if start_share:
        tuned = model.get_weights()
        if len(tuned) != len(start_weights):
            raise ValueError("the start weights are not of this network")
        blended = [start_share * a + (1.0 - start_share) * b for a, b in zip(start_weights, tuned, strict=True)]
        model.set_weights(blended)
    return model


def before_blend(model, start_weights: list, start_share: float):
    """The fine-tune a blended model came from (:func:`blend_with` undone), as a new model; None when there
    was no blend (``start_share`` 0) or nothing of the fine-tune is left in it (1).

    The blend is linear in the weights, so the fine-tune's are ``(blended - start_share * start) /
    (1 - start_share)``; that holds for an average of blended fine-tunes of the same start too.
    """
    if not 0.0 < start_share < 1.0:
        return None
    keras = keras_module()
    blended = model.get_weights()
    if len(blended) != len(start_weights):
        raise ValueError("the start weights are not of this network")
    tuned = keras.models.clone_model(model)
    keep = 1.0 - start_share
    tuned.set_weights([(b - start_share * a) / keep for a, b in zip(start_weights, blended, strict=True)])
    return tuned


def average_weights(models: list):
    """The first model with, in place, every weight the mean of the models' (a "model soup": Wortsman et
    al., ICML 2022). Meant for fine-tunes of the same start, as the cross-fit's fold models are."""
    if not models:
        raise ValueError("no model to average")
    weights = [model.get_weights() for model in models]
    if len({len(w) for w in weights}) != 1:
        raise ValueError("the models are not of the same network")
    models[0].set_weights([np.mean(layer, axis=0) for layer in zip(*weights, strict=True)])
    return models[0]


def predict_proba(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities (n, 10) from a Keras model, batched, without Keras' per-call overhead."""
    x = as_input(images)
    return (
        np.concatenate([np.asarray(model(x[i : i + 512], training=False)) for i in range(0, len(x), 512)])
        if len(x)
        else np.zeros((0, 10), dtype=np.float32)
    )


def evaluate(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a Keras model on (images, labels)."""
    if len(labels) == 0:
        return float("nan")
    return float((predict_proba(model, images).argmax(axis=1) == np.asarray(labels)).mean())


def export_tflite(model, path: Path) -> Path:
    """Write the LiteRT (``.tflite``) export of a Keras model, atomically."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its whole signature
        flat = converter.convert()
    atomic_write(path, flat)
    return Path(path)


def save_model(model, models_dir: Path, version: str | None = None) -> SavedModel:
    """Save ``model_<version>.keras`` and its LiteRT export beside it."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    version = version or timestamp_id()
    files = model_files(models_dir, version)
    keras_path, tflite_path, partial = files.keras_path, files.tflite_path, partial_keras_path(models_dir, version)
    model.save(partial)
    os.replace(partial, keras_path)
    export_tflite(model, tflite_path)
    return SavedModel(version, keras_path, tflite_path)


def load_model(path: Path):
    """Load a ``.keras`` model; a missing or corrupt file raises ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}")
    keras = keras_module()
    try:
        return keras.models.load_model(path)
    except Exception as error:  # keras raises many kinds for a damaged archive
        raise ModelFileError(f"model file {path} is corrupt or unreadable: {error}") from error
