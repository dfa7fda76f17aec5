"""How long labels persist, on hand-made sequences (temporal_split itself is tested with the recorder)."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import DatasetError
from bridge.splits import label_persistence_steps, temporal_split


def blocks(block: int, classes: int, n_blocks: int) -> np.ndarray:
    """Blocks of ``block`` equal labels cycling through ``classes`` classes: 0 0 0 1 1 1 2 2 2 0 0 0 ..."""
    return np.repeat(np.arange(n_blocks) % classes, block)


def test_blocks_of_known_length_decay_at_the_hand_computed_lag():
    # Two classes, blocks of 10, 40 blocks: chance = 0.5, threshold = 0.5 + 0.05 * 0.5 = 0.525. A pair (t, t+L),
    # L < 10, agrees only inside a block: 40 * (10 - L) of 400 - L pairs. L = 4: 240 / 396 = 0.606; L = 5:
    # 200 / 395 = 0.506 -> 5.
    assert label_persistence_steps(blocks(10, 2, 40)) == 5
    # Four classes, blocks of 8: chance 0.25, threshold 0.2875. L = 5: 40 * 3 / 315 = 0.381; L = 6: 80 / 314 =
    # 0.255 -> 6 (about 8 * (1 - 1/4) * (1 - 0.05) = 5.7).
    assert label_persistence_steps(blocks(8, 4, 40)) == 6


def test_alternating_labels_persist_one_step():
    assert label_persistence_steps(np.arange(20) % 2) == 1  # A(1) = 0, below chance 0.5


def test_a_label_that_never_changes_returns_the_cap():
    assert label_persistence_steps(np.full(50, 3)) == 49  # one class: no lag can reach chance; cap = n - 1
    assert label_persistence_steps(np.full(50, 3), max_lag=10) == 10
    # constant per device: each device's label never changes, although the classes are balanced overall
    assert label_persistence_steps([np.zeros(30, int), np.ones(30, int)]) == 29


def test_pairs_never_cross_from_one_sequence_to_the_next():
    # The same 60 labels as one sequence: pairs across the 0 -> 1 change agree (60 - 2L) / (60 - L) of the
    # time, which reaches 0.525 at L = 20.
    assert label_persistence_steps(np.r_[np.zeros(30, int), np.ones(30, int)]) == 20


def test_unlabelled_steps_are_ignored():
    y = blocks(10, 2, 40)

    assert label_persistence_steps(np.r_[y, np.full(50, -1)]) == 5  # no pair involves the unlabelled tail
    assert label_persistence_steps(np.full(10, -1)) == 0  # not one labelled pair
    with pytest.raises(DatasetError, match="expected 1-D label sequences"):
        label_persistence_steps(np.zeros((2, 3, 4), int))


def test_an_absurd_guard_is_refused_at_once_with_the_exact_shortest_episode():
    """Defect (issue 14): the shortest workable episode was searched one step at a time, so test_fraction
    0.999999999 with a one-hour guard hung `xrfed run` (about 10**13 iterations). Now a binary search; checked
    against a brute-force search on small cases."""
    import itertools
    import re

    from bridge.splits import _n_test

    def brute(n: int, f: float, g: int) -> int:
        need = n + 1
        while need - _n_test(need, f) - g < 1:
            need += 1
        return need

    for n, f, g in itertools.product(range(0, 40, 3), (0.01, 0.2, 0.25, 0.5, 0.9), (1, 5, 50)):
        try:
            temporal_split(n, f, g)
        except DatasetError as exc:
            assert int(re.search(r"at least (\d+) steps", str(exc)).group(1)) == brute(n, f, g)
    with pytest.raises(DatasetError, match=r"needs at least \d{14} steps"):
        temporal_split(10, 0.999999999, 36_000)
