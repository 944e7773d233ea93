"""Every label trains, the gate stays honest: the cross-fit over fresh labels, and pseudo-labels (no TensorFlow)."""

from __future__ import annotations

import numpy as np

from mnist_hitl.learning.retrain import crossfit, labels, promotion
from mnist_hitl.learning.retrain.labels import RetrainData, UserLabels
from mnist_hitl.preprocess import encode_png
from mnist_hitl.store import Store


def drawings(count: int, seed: int, first_id: int = 1) -> UserLabels:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=count)
    ids = np.arange(first_id, first_id + count)
    return UserLabels(x, y, ids, ids.copy(), y.copy())


def data_with(seen: UserLabels, fresh: UserLabels, pseudo: UserLabels | None = None) -> RetrainData:
    mnist = drawings(30, seed=1, first_id=10_000)
    holdout = drawings(20, seed=2, first_id=20_000)
    return RetrainData(
        mnist.x, mnist.y, holdout.x, holdout.y, seen, fresh, oversample=3, through_label_id=0, pseudo=pseudo
    )


class Memoriser:
    """A 'challenger recipe' that learns only the drawings it trained on; elsewhere it answers as the champion."""

    def __init__(self, champion: dict[bytes, int]) -> None:
        self.champion = champion

    def fit(self, x: np.ndarray, y: np.ndarray) -> dict[bytes, int]:
        return {picture.tobytes(): int(digit) for picture, digit in zip(x, y)}

    def read(self, learnt: dict[bytes, int], x: np.ndarray) -> np.ndarray:
        return np.array([learnt.get(p.tobytes(), self.champion[p.tobytes()]) for p in x])


def test_a_challenger_better_only_on_drawings_it_trained_on_is_rejected():
    seen, fresh = drawings(10, seed=3), drawings(60, seed=4, first_id=100)
    data = data_with(seen, fresh)
    # The champion reads half the fresh drawings right, and the MNIST holdout perfectly.
    champion_fresh = np.where(np.arange(len(fresh)) % 2 == 0, fresh.y, (fresh.y + 1) % 10)
    champion = {p.tobytes(): int(d) for p, d in zip(fresh.x, champion_fresh)}
    champion |= {p.tobytes(): int(d) for p, d in zip(data.x_mnist_holdout, data.y_mnist_holdout)}
    recipe = Memoriser(champion)
    final = recipe.fit(*data.training_set())  # trained on every label, fresh ones included
    mnist = {"challenger": recipe.read(final, data.x_mnist_holdout), "champion": data.y_mnist_holdout}

    # Judged on what it trained on, it looks 50 points better, and the rule would promote it.
    in_sample = promotion.judge(mnist, {"challenger": recipe.read(final, fresh.x), "champion": champion_fresh},
                                data.y_mnist_holdout, fresh.y)  # fmt: skip
    assert in_sample.challenger.users_heldout == 1.0 and promotion.promotion_rule(in_sample).promote

    # The cross-fit judges each fresh drawing by a model that never trained on it: no gain, rejected.
    judged = crossfit.cross_fit(data, recipe.fit, recipe.read)
    assert set(judged.folds.tolist()) == {0, 1} and (judged.predicted >= 0).all()
    honest = promotion.judge(mnist, {"challenger": judged.predicted, "champion": champion_fresh},
                             data.y_mnist_holdout, fresh.y)  # fmt: skip
    verdict = promotion.promotion_rule(honest)
    assert honest.challenger.users_heldout == honest.champion.users_heldout == 0.5
    assert not verdict.promote
    assert any("not better" in reason and "McNemar p=" in reason and "at 95%" in reason for reason in verdict.reasons)


def test_every_label_trains_the_final_model_and_no_fold_trains_on_what_it_judges():
    seen, fresh = drawings(8, seed=5), drawings(40, seed=6, first_id=200)
    data = data_with(seen, fresh)
    everything = {p.tobytes() for p in data.training_set()[0]}
    assert {p.tobytes() for p in np.concatenate([seen.x, fresh.x])} <= everything
    for fold in set(data.folds.tolist()):
        trained = {p.tobytes() for p in data.training_set(leave_out_fold=fold)[0]}
        judged = {p.tobytes() for p in fresh.x[data.folds == fold]}
        assert judged and not (judged & trained)
        assert {p.tobytes() for p in seen.x} <= trained  # the labels the champion saw always train
    assert data.sizes()["users_labels"] == 48 and data.sizes()["users_fresh"] == 40


def test_the_labels_the_champion_never_saw_are_the_fresh_ones(home):
    with Store(home.db_path) as store:
        ids = [store.record_prediction(encode_png(np.eye(28) * (i + 1)), 1, [0.1] * 10, "v1", 1.0) for i in range(6)]
        label_ids = [store.add_label(pid, 1, "confirm") for pid in ids]
        store.record_model_version("v2", "model_v2.keras", 0.98, "deployed", {"through_label_id": label_ids[3]})
        data = labels.retrain_data(home, store, deployed_version="v2")
        first = labels.retrain_data(home, store, deployed_version="v1")  # no record: the first model saw no label
    assert list(data.users_seen.prediction_ids) == ids[:4]
    assert list(data.users_fresh.prediction_ids) == ids[4:]
    assert len(first.users_fresh) == 6 and len(first.users_seen) == 0


def test_pseudo_labels_are_unlabelled_sure_drawings_and_never_judge(home):
    with Store(home.db_path) as store:
        pictures = [encode_png(np.roll(np.eye(28) * 255, shift, axis=1)) for shift in range(8)]
        ids = [store.record_prediction(png, 3, [0.1] * 10, "v1", 1.0) for png in pictures]
        for pid in ids[:3]:
            store.add_label(pid, 3, "confirm")

        def read(x: np.ndarray) -> np.ndarray:  # sure of every other picture
            sure = np.zeros((len(x), 10))
            sure[:, 7] = [0.999 if index % 2 else 0.6 for index in range(len(x))]
            sure[:, 0] = 1 - sure[:, 7]
            return sure

        pseudo = crossfit.pseudo_labels(store, read, confidence=0.99)
        assert crossfit.pseudo_labels(store, read, confidence=0) is None
        data = labels.retrain_data(home, store, deployed_version="v1")
    unlabelled = ids[3:]
    assert list(pseudo.prediction_ids) == unlabelled[1::2] and set(pseudo.y.tolist()) == {7}

    data.pseudo = pseudo
    assert not set(pseudo.prediction_ids) & set(data.users_heldout.prediction_ids)
    x, y = data.training_set()
    assert len(y) == len(data.y_mnist) + 3 * data.copies + len(pseudo)  # once each, people's labels copied
    for fold in set(data.folds.tolist()):  # pseudo-labels train every model of the cross-fit
        trained = {p.tobytes() for p in data.training_set(leave_out_fold=fold)[0]}
        assert {p.tobytes() for p in pseudo.x} <= trained
    assert data.sizes()["pseudo_labels"] == 2


def test_the_quick_way_trains_once_without_the_fold_that_judges_it():
    seen, fresh = drawings(10, seed=7), drawings(60, seed=8, first_id=300)
    data = data_with(seen, fresh)
    champion_fresh = np.where(np.arange(len(fresh)) % 2 == 0, fresh.y, (fresh.y + 1) % 10)
    champion = {p.tobytes(): int(d) for p, d in zip(fresh.x, champion_fresh)}
    recipe = Memoriser(champion)
    trainings = []

    def fit(x, y):
        trainings.append(len(y))
        return recipe.fit(x, y)

    challenger, answers, done = crossfit.judge(data, fit, recipe.read, final_fit=False)
    judged = data.users_heldout
    assert len(trainings) == 1 and answers is None and done["folds"] == [0]
    assert 0 < len(judged) < len(fresh) and set(judged.prediction_ids) <= set(fresh.prediction_ids)
    assert not {p.tobytes() for p in judged.x} & set(challenger)  # it never trained on what judges it
    assert {p.tobytes() for p in fresh.x} - {p.tobytes() for p in judged.x} <= set(challenger)
    reads = recipe.read(challenger, judged.x)
    in_fold = np.isin(fresh.prediction_ids, judged.prediction_ids)
    honest = promotion.judge(
        {"challenger": data.y_mnist_holdout, "champion": data.y_mnist_holdout},
        {"challenger": reads, "champion": champion_fresh[in_fold]},
        data.y_mnist_holdout,
        judged.y,
    )
    assert not promotion.promotion_rule(honest).promote  # the memoriser is no better on the fold it never saw

    data.judged_fold = None
    _, answers, done = crossfit.judge(data, fit, recipe.read, final_fit=True)
    assert len(trainings) == 1 + 2 + 1 and len(answers) == len(fresh)  # two folds, then the final fit


def test_a_cross_fit_read_as_probabilities_gives_every_fresh_label_out_of_fold_probabilities():
    seen, fresh = drawings(10, seed=3), drawings(40, seed=4, first_id=100)
    data = data_with(seen, fresh)
    champion = {p.tobytes(): int(d) for p, d in zip(fresh.x, (fresh.y + 1) % 10)}
    recipe = Memoriser(champion)

    def probabilities(model, x):  # sure of what the recipe reads
        return np.eye(10)[recipe.read(model, x)] * 0.91 + 0.01

    challenger, answers, _ = crossfit.judge(data, recipe.fit, probabilities, final_fit=True)
    assert answers.shape == (len(fresh), 10) and not np.isnan(answers).any()
    # Each row comes from a model that never trained on it: here, the champion's answer, never the label.
    assert (answers.argmax(axis=1) == (fresh.y + 1) % 10).all()
    np.testing.assert_array_equal(crossfit.out_of_fold_probabilities(data, challenger, None, answers), answers)


def test_averaging_the_fold_models_deploys_a_challenger_of_every_label_without_a_final_training():
    seen, fresh = drawings(8, seed=7), drawings(40, seed=8, first_id=300)
    data = data_with(seen, fresh)
    recipe, trained = Memoriser({p.tobytes(): (int(d) + 1) % 10 for p, d in zip(fresh.x, fresh.y)}), []

    def fit(x, y):
        trained.append(len(y))
        return recipe.fit(x, y)

    def average(models):  # a memoriser's "soup": what any fold model learnt
        return {key: digit for model in models for key, digit in model.items()}

    challenger, answers, done = crossfit.judge(data, fit, recipe.read, final_fit=True, average=average)
    assert len(trained) == len(set(data.folds.tolist())) == 2  # one training per fold, no final fit
    assert max(trained) < len(data.training_set()[1])  # each fold model left its fold out
    assert list(recipe.read(challenger, fresh.x)) == list(fresh.y)  # the average learnt every fresh label
    assert len(answers) == len(fresh) and not (answers == fresh.y).any()  # judged out of fold: as the champion
    assert "averaged" in done["judging"]

    trained.clear()
    crossfit.judge(data, fit, recipe.read, final_fit=True)
    assert len(trained) == 3  # without averaging: the final fit on every label comes on top
