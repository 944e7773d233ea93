"""Model files: save, export, deploy, load; the fast path agrees with Keras."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mnist_hitl.learning.data import load_bundled
from mnist_hitl.learning.retrain.deployment import deploy, deployed_keras_path
from mnist_hitl.learning.retrain.network import SavedModel, load_model, predict_proba
from mnist_hitl.model import ModelFileError, Predictor, deployed_model
from mnist_hitl.store import Store


def _deployed_files(models_dir):
    deployed = deployed_model(models_dir)
    return deployed, models_dir / f"model_{deployed.version}.keras"


def test_deployed_model_has_versioned_files_named_by_the_pointer(home_with_model):
    models = home_with_model.models_dir
    deployed, keras_path = _deployed_files(models)
    assert keras_path.is_file() and deployed.tflite_path.is_file()
    assert deployed.tflite_path.name == f"model_{deployed.version}.tflite"
    assert deployed.keras_path == keras_path == deployed_keras_path(home_with_model)
    assert 0.97 < deployed.holdout_accuracy <= 1.0


def test_fast_predictor_agrees_with_keras(home_with_model):
    models = home_with_model.models_dir
    keras_model = load_model(deployed_keras_path(home_with_model))
    digits = load_bundled().x_test[:200]
    expected = predict_proba(keras_model, digits)
    predictor = Predictor(models)
    fast = np.stack([predictor.predict(d.astype(np.float32) / 255.0)[0] for d in digits])
    assert np.abs(fast - expected).max() < 1e-4
    assert (fast.argmax(1) == expected.argmax(1)).all()


def test_predictor_follows_a_new_deployment_and_survives_a_bad_pointer(home_with_model):
    models = home_with_model.models_dir
    deployed, keras_path = _deployed_files(models)
    predictor = Predictor(models)
    digit = load_bundled().x_test[0] / 255.0
    assert predictor.predict(digit)[1] == deployed.version
    copy = SavedModel(
        "20990101-000000-000", models / "model_20990101-000000-000.keras", models / "model_20990101-000000-000.tflite"
    )
    shutil.copyfile(keras_path, copy.keras_path)
    shutil.copyfile(deployed.tflite_path, copy.tflite_path)
    with Store(home_with_model.db_path) as store:
        deploy(home_with_model, store, copy, 0.5, {"reason": "test"})
    assert predictor.predict(digit)[1] == "20990101-000000-000"
    assert json.loads((models / "latest.json").read_text())["version"] == "20990101-000000-000"


def test_missing_model_gives_a_clear_error(home):
    with pytest.raises(ModelFileError, match="mnist-hitl init"):
        Predictor(home.models_dir).predict(np.zeros((28, 28), np.float32))


def test_corrupt_model_files_give_clear_errors(home_with_model):
    models = home_with_model.models_dir
    deployed, keras_path = _deployed_files(models)
    broken = models / "broken.keras"
    broken.write_bytes(keras_path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="corrupt"):
        load_model(broken)
    with pytest.raises(ModelFileError, match="no model file"):
        load_model(models / "absent.keras")
    deployed.tflite_path.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelFileError, match="corrupt"):
        Predictor(models).predict(np.zeros((28, 28), np.float32))
    (models / "latest.json").write_text("{ half a json")
    with pytest.raises(ModelFileError, match="corrupt"):
        deployed_model(models)


def test_a_fine_tune_keeping_a_share_of_the_champions_weights_lands_that_far_back_towards_it(home_with_model):
    from mnist_hitl.learning.retrain import search
    from mnist_hitl.learning.retrain.network import TrainParams, before_blend

    champion = load_model(deployed_keras_path(home_with_model)).get_weights()
    data = load_bundled()
    x, y = data.x_train[:128], 9 - data.y_train[:128]  # labels the champion disagrees with: the weights move
    params = TrainParams(epochs=1, batch_size=32, seed=3)
    tuned = search.fit(x, y, params, champion).get_weights()
    kept = search.fit(x, y, params, champion, start_share=0.25).get_weights()
    for start, alone, blended in zip(champion, tuned, kept, strict=True):
        np.testing.assert_allclose(blended, 0.25 * start + 0.75 * alone, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(start, alone) for start, alone in zip(champion, tuned, strict=True))
    # the guard's view: the fine-tune the blend came from, recovered from the blend and the champion
    blend = search.fit(x, y, params, champion, start_share=0.25)
    recovered = before_blend(blend, champion, 0.25).get_weights()
    for alone, back in zip(tuned, recovered, strict=True):
        np.testing.assert_allclose(back, alone, rtol=1e-4, atol=1e-5)
    assert before_blend(blend, champion, 0.0) is None and before_blend(blend, champion, 1.0) is None
    with pytest.raises(ValueError, match="share"):
        search.fit(x, y, params, champion, start_share=1.5)


def test_averaging_the_fold_models_gives_every_weight_their_mean(home_with_model):
    from mnist_hitl.learning.retrain import search
    from mnist_hitl.learning.retrain.network import TrainParams, average_weights

    champion = load_model(deployed_keras_path(home_with_model)).get_weights()
    data = load_bundled()
    params = TrainParams(epochs=1, batch_size=32, seed=3)
    folds = [search.fit(data.x_train[i : i + 64], 9 - data.y_train[i : i + 64], params, champion) for i in (0, 64)]
    apart = [model.get_weights() for model in folds]
    assert any(not np.allclose(a, b) for a, b in zip(*apart, strict=True))  # the folds learnt different things
    soup = average_weights(folds).get_weights()
    for mean, a, b in zip(soup, *apart, strict=True):
        np.testing.assert_allclose(mean, (a + b) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no model"):
        average_weights([])
