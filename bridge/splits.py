"""Held-out splits in time, and how long labels stay correlated with themselves (which sizes the gap between them).

Neighbouring steps of a recording are near-duplicates -- the same view, the same label -- so the test rows are the
*last* part of every episode (:func:`temporal_split`). That alone still leaks: a label that persists for seconds (a
room, an activity, a gaze dwell) makes the first test rows copies of the last training rows. A *guard* of rows
between the two belongs to neither set; :func:`label_persistence_steps` measures how long it has to be.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DatasetError

__all__ = ["temporal_split", "label_persistence_steps"]


def _count(name: str, value: Any) -> int:
    """``value`` as a Python int >= 0 (numpy integers included), or DatasetError naming ``name``."""
    try:
        n = operator.index(value) if not isinstance(value, bool) else -1
    except TypeError:
        n = -1
    if n < 0:
        raise DatasetError(f"temporal_split: {name} must be an integer >= 0, got {value!r}")
    return n


def _n_test(n_steps: int, test_fraction: float) -> int:
    n_test = math.floor(n_steps * test_fraction + 0.5)  # round half up
    if test_fraction > 0 and n_steps >= 2:
        n_test = min(max(n_test, 1), n_steps - 1)
    return max(0, min(n_test, n_steps))


def _shortest_episode(lo: int, test_fraction: float, guard: int) -> int:
    """The fewest steps ``n >= lo`` that leave a training row beside the test rows and the guard.

    ``n - _n_test(n)`` never decreases as ``n`` grows (``test_fraction < 1``), so a binary search finds it in
    O(log n) even for an absurd guard (a loop one step at a time took 10**13 steps for a one-hour guard at
    ``test_fraction`` 0.999999999)."""

    def fits(n: int) -> bool:
        return n - _n_test(n, test_fraction) - guard >= 1

    hi = max(lo, 2)
    while not fits(hi):
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def temporal_split(n_steps: int, test_fraction: float, guard_steps: int = 0) -> dict[str, list[int]]:
    """Half-open row ranges ``{"train": [0, a], "guard": [a, b], "test": [b, n]}`` of one episode of ``n`` steps.

    The last ``round(n * test_fraction)`` rows (half up) are test; the ``guard_steps`` rows before them are in
    neither set. With a positive fraction and at least 2 steps, at least one row is test and at least one train;
    when the guard would then leave no training row, :class:`DatasetError` names the numbers. Without test rows
    there is no boundary to guard, and the guard is empty.
    """
    n_steps, guard_steps = _count("n_steps", n_steps), _count("guard_steps", guard_steps)
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"temporal_split: test_fraction must be in [0, 1), got {test_fraction!r}")
    n_test = _n_test(n_steps, test_fraction)
    guard = guard_steps if n_test else 0
    train = n_steps - n_test - guard
    if train < 1 and guard:
        need = _shortest_episode(n_steps + 1, test_fraction, guard)
        raise DatasetError(
            f"temporal_split: {n_steps} steps hold {n_test} test step{'s' * (n_test != 1)} (test_fraction "
            f"{test_fraction:g}) and a guard of {guard} steps, which leaves {max(train, 0)} to train on; an episode "
            f"needs at least {need} steps for this guard, or the guard must be shorter")
    return {"train": [0, train], "guard": [train, n_steps - n_test], "test": [n_steps - n_test, n_steps]}


def label_persistence_steps(labels: np.ndarray | Sequence[np.ndarray], *, margin: float = 0.05,
                            max_lag: int | None = None) -> int:
    """How many steps a label sequence stays correlated with itself: the smallest lag ``L >= 1`` at which
    ``P(y[t] == y[t + L])`` has fallen to within ``margin`` of the chance level.

    Definitions. Steps with a label < 0 carry no label and are left out. ``A(L)`` is the fraction of pairs
    ``(t, t + L)``, both labelled, whose labels agree. The chance level ``C = sum_c p_c ** 2`` is the agreement of
    two independent draws from the class frequencies ``p_c`` of all labelled steps. The sequence has decayed at
    lag ``L`` when ``A(L) <= C + margin * (1 - C)``: the chance-corrected agreement ``(A - C) / (1 - C)`` (Scott's
    pi of ``y[t]`` against ``y[t + L]``) is at most ``margin``. The margin is a fraction of the gap between chance
    and perfect agreement, so a nearly constant label is judged by its rare changes, not by its high chance level.

    ``labels`` is one sequence or several (devices, episodes; a list, or the rows of a 2-D array): pairs never
    cross from one sequence to the next, and the chance level pools all of them. Lags ``1 .. max_lag`` (default: the longest sequence minus 1) are
    examined. When the agreement never decays that far -- a label constant per device, or one class only --
    the result is the cap ``max_lag`` (the label persists at least that long). Without a single labelled pair
    the result is 0.

    Blocks of ``B`` steps cycling through ``K`` equally frequent classes decay linearly, ``A(L) ~ 1 - L / B``, and
    reach the margin near ``L = B * (1 - 1/K) * (1 - margin)``: after that lag a step tells no more about the
    label ``L`` steps later than the class frequencies do.
    """
    if isinstance(labels, np.ndarray):
        seqs = [labels] if labels.ndim == 1 else list(labels)
    else:
        seqs = [np.asarray(s) for s in labels]
        if seqs and all(s.ndim == 0 for s in seqs):  # a plain list of labels is one sequence
            seqs = [np.asarray(labels)]
    if any(s.ndim != 1 for s in seqs):
        raise DatasetError(f"label_persistence_steps: expected 1-D label sequences, got shapes "
                           f"{[s.shape for s in seqs]}")
    if not 0.0 <= margin < 1.0:
        raise DatasetError(f"label_persistence_steps: margin must be in [0, 1), got {margin!r}")
    longest = max((len(s) for s in seqs), default=0)
    cap = longest - 1 if max_lag is None else int(max_lag)
    if cap < 1:
        return 0
    seqs = [s.astype(np.int64) for s in seqs]
    labelled = np.concatenate([s[s >= 0] for s in seqs])
    if labelled.size < 2:
        return 0
    p = np.bincount(labelled) / labelled.size
    chance = float(np.sum(p * p))
    threshold = chance + margin * (1.0 - chance)
    seen_pair = False
    for lag in range(1, cap + 1):
        pairs = agree = 0
        for s in seqs:
            if len(s) <= lag:
                continue
            a, b = s[:-lag], s[lag:]
            both = (a >= 0) & (b >= 0)
            pairs += int(both.sum())
            agree += int((both & (a == b)).sum())
        if not pairs:
            continue
        seen_pair = True
        if chance < 1.0 and agree / pairs <= threshold:
            return lag
    return cap if seen_pair else 0
