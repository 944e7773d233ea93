"""Which labelled drawings a reviewer is offered for a second opinion (no store, no model)."""

from __future__ import annotations

from mnist_hitl.workbench.opinions import needing_a_second_opinion


def test_doubted_labels_come_first_and_never_to_whoever_labelled_them():
    held = {1: {"ada": 4}, 2: {"bob": 7}, 3: {"ada": 1, "bob": 1}, 4: {"unknown": 9}, 5: {"ada": 3}}
    offered = needing_a_second_opinion(held, doubted=[5, 2, 3], share=0, seed=0, reviewer="eve")
    assert offered == [5, 2]  # 3 has two opinions already; no share drawn
    assert needing_a_second_opinion(held, doubted=[5, 2], share=0, seed=0, reviewer="ada") == [2]


def test_the_share_draws_a_fixed_part_of_the_other_labels():
    held = {pid: {"ada": pid % 10} for pid in range(1, 2001)}
    drawn = needing_a_second_opinion(held, doubted=[], share=0.1, seed=0, reviewer="bob")
    assert 150 <= len(drawn) <= 250 and drawn == sorted(drawn)
    assert drawn == needing_a_second_opinion(held, doubted=[], share=0.1, seed=0, reviewer="eve")  # the same ones
    assert needing_a_second_opinion(held, doubted=[], share=1, seed=0, reviewer="bob") == list(range(1, 2001))
    assert needing_a_second_opinion(held, doubted=[], share=0.1, seed=0, reviewer="ada") == []
