"""People's labels weigh: a fixed share of every training set, as variants of each drawing (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_hitl.learning.retrain import variants
from mnist_hitl.learning.retrain.labels import RetrainData, UserLabels, replay_sample


def strokes(count: int, first_id: int = 1) -> UserLabels:
    """Digit-like pictures, each its own: a bar in a different place and speckle seeded by its id."""
    x = np.zeros((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        x[i, 6:22, 6 + i % 16 : 9 + i % 16] = 255
        x[i, 8:20, 8:20] |= np.random.default_rng(first_id + i).integers(0, 2, (12, 12), dtype=np.uint8) * 128
    y = np.arange(count) % 10
    ids = np.arange(first_id, first_id + count)
    return UserLabels(x, y, ids, ids.copy(), y.copy())


def data(seen: int, fresh: int, share: float, mnist: int = 600) -> RetrainData:
    replay = strokes(mnist, first_id=10_000)
    return RetrainData(
        replay.x,
        replay.y,
        replay.x[:10],
        replay.y[:10],
        strokes(seen),
        strokes(fresh, first_id=500),
        oversample=5,
        through_label_id=0,
        label_share=share,
    )


@pytest.mark.parametrize(("labelled", "share"), [(25, 1 / 3), (50, 0.5), (12, 0.2)])
def test_people_s_drawings_are_the_share_asked_of_the_training_set(labelled, share):
    split = data(labelled // 2, labelled - labelled // 2, share)
    x, y = split.training_set()
    people = len(y) - len(split.y_mnist)
    assert people == labelled * split.copies
    assert people / len(y) == pytest.approx(share, abs=0.03)


def test_each_drawing_trains_as_itself_and_as_different_variants_with_its_label():
    split = data(5, 5, 1 / 3)
    x, y = split.training_set()
    people_x, people_y = x[len(split.y_mnist) :], y[len(split.y_mnist) :]
    originals = split.users_train
    for i, (picture, digit) in enumerate(zip(originals.x, originals.y)):
        own = slice(i * split.copies, (i + 1) * split.copies)
        assert np.array_equal(people_x[own][0], picture)  # itself first
        assert set(people_y[own].tolist()) == {int(digit)}
        distinct = {p.tobytes() for p in people_x[own]}
        assert len(distinct) == split.copies  # variants, not one picture repeated
        assert all(p.sum() > 0 for p in people_x[own])  # none moved off the canvas


def test_the_share_off_repeats_each_drawing_oversample_times():
    split = data(3, 3, 0.0)
    x, y = split.training_set()
    assert split.copies == 5 and len(y) == len(split.y_mnist) + 6 * 5
    assert len({p.tobytes() for p in x[len(split.y_mnist) :]}) == 6


def test_a_fold_left_out_leaves_out_its_drawings_and_their_variants():
    split = data(4, 40, 1 / 3)
    x, _ = split.training_set(leave_out_fold=0)
    left_out = split.users_fresh.x[split.folds == 0]
    trained = {p.tobytes() for p in x}
    assert left_out.size and not any(p.tobytes() in trained for p in left_out)
    kept = len(split.users_seen) + int((split.folds != 0).sum())
    assert len(x) == len(split.y_mnist) + kept * split.copies


def test_variants_are_the_same_for_the_same_seed_and_differ_for_another():
    pictures = strokes(3).x
    first, again = variants.variants(pictures, 4, seed=1), variants.variants(pictures, 4, seed=1)
    other = variants.variants(pictures, 4, seed=2)
    assert first.shape == (3, 4, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_copies_are_capped_and_never_fewer_than_one():
    assert variants.copies_for_share(25, 2000, 1 / 3) == 40
    assert variants.copies_for_share(100, 2000, 1 / 3) == 10
    assert variants.copies_for_share(5000, 2000, 1 / 3) == 1
    assert variants.copies_for_share(0, 2000, 1 / 3) == 1


def test_the_replay_is_a_sample_that_changes_with_the_seed():
    sample = replay_sample(4000, 2000, seed=3)
    assert len(sample) == len(set(sample.tolist())) == 2000
    assert not np.array_equal(sample, replay_sample(4000, 2000, seed=4))
    assert np.array_equal(replay_sample(4000, 0, seed=3), np.arange(4000))
    assert np.array_equal(replay_sample(1000, 2000, seed=3), np.arange(1000))


def test_many_labels_still_appear_at_least_oversample_times():
    split = data(200, 200, 1 / 3, mnist=600)  # the share alone would ask for one copy each
    x, y = split.training_set()
    assert split.copies == split.oversample == 5
    assert len(y) - len(split.y_mnist) == 400 * 5


def test_the_replay_grows_so_hundreds_of_labels_never_outnumber_mnist():
    from mnist_hitl.config import get_settings
    from mnist_hitl.learning.retrain.labels import _replay_size

    settings = get_settings(replay=2000, label_share=1 / 3, oversample=5)
    assert _replay_size(settings, 5, 50) == 2000  # 50 labels x 20 copies = 1,000: the replay as set
    assert _replay_size(settings, 5, 800) == 4000  # 800 labels x 5 copies: as many MNIST digits
    assert _replay_size(get_settings(replay=0, label_share=1 / 3), 5, 800) == 0  # 0: all of them
    assert _replay_size(get_settings(replay=2000, label_share=0.0), 5, 800) == 2000
