"""RIS against a hand-derived case, a plain-loop reference, and its two extreme properties."""
from __future__ import annotations

import numpy as np
import pytest

from vidmine.evaluation.ris import ris_score


def test_hand_computed_case():
    # N = 6 images, C = 2 classes -> p = 50, i = 3. Both units' columns hold 1..6, so
    # t+ = 4 (G = 3/6 = 0.5) and t- = 3.
    # unit 0 = [1 2 3 | 4 5 6]: set A (class 0) has c- = 2 (1, 2) -> L = 2/3, I = 4/3;
    #                           set B (class 1) has c+ = 2 (5, 6) -> I = 4/3.
    # unit 1 = [6 1 5 | 2 4 3]: set A: c+ = 2 (6, 5), c- = 1 -> I = 4/3;
    #                           set B: c+ = 0, c- = 1 (2) -> L = 1/3, I = 2/3.
    # Top-1: (4/3 + 4/3) / 2 * 50 = 66.67.   Top-2: (4/3 + (4/3 + 2/3) / 2) / 2 * 50 = 58.33.
    F = np.array([[1, 6], [2, 1], [3, 5], [4, 2], [5, 4], [6, 3]], dtype=np.float32)
    sets = np.array([0, 0, 0, 1, 1, 1])
    classes = np.array([0, 0, 0, 1, 1, 1])
    assert ris_score(F, sets, classes, 1) == pytest.approx(200 / 3)
    assert ris_score(F, sets, classes, 2) == pytest.approx(175 / 3)


def _reference(F, sets, classes, k):
    """docs/design.md's definition, one unit and one set at a time."""
    n, d = F.shape
    cls = sorted(set(classes.tolist()))
    p = min(100 * (1 - 1 / len(cls)), 95)
    i = int(np.floor(n * p / 100))
    inv = np.zeros((len(cls), d))
    for u in range(d):
        col = F[:, u]
        t_pos, t_neg = sorted(col)[i], sorted(col, reverse=True)[i]
        g = np.mean(col >= t_pos)
        for ci, c in enumerate(cls):
            total, count = 0.0, 0
            for s in sorted(set(sets[classes == c].tolist())):
                members = col[sets == s]
                if len(members) < 3:
                    continue
                hit = max(np.sum(members > t_pos), np.sum(members < t_neg))
                if hit > 0:
                    total += hit / len(members)
                    count += 1
            inv[ci, u] = (total / count if count else 0.0) / g
    return np.mean([np.mean(sorted(row, reverse=True)[:k]) for row in inv]) * (100 - p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_loop_reference(seed):
    rng = np.random.default_rng(seed)
    n, d = 90, 12
    sets = rng.integers(0, 25, n)
    classes = sets % 4
    F = rng.normal(size=(n, d)).astype(np.float32)
    F[sets == 3] += 2.0  # a set that fires on every unit
    F = np.round(F, 1)   # ties, as real ReLU features have
    for k in (1, 5):
        assert ris_score(F, sets, classes, k) == pytest.approx(_reference(F, sets, classes, k), rel=1e-6)


def test_identical_within_sets_scores_the_maximum_and_shuffled_scores_near_chance():
    rng = np.random.default_rng(0)
    n_sets, per_set, d = 200, 8, 64
    sets = np.repeat(np.arange(n_sets), per_set)
    classes = sets // 10
    proto = rng.normal(size=(n_sets, d)).astype(np.float32)
    identical = proto[sets]
    noisy = identical + rng.normal(size=identical.shape).astype(np.float32) * 0.3
    shuffled = identical[rng.permutation(len(sets))]
    best = ris_score(identical, sets, classes, 10)
    # Every set either fires wholly or not at all, so L = 1 and I = 1 / G: the score is
    # 100 (1 - p/100) / G, i.e. 100 up to the ties at the threshold.
    assert best == pytest.approx(100.0, rel=0.02)
    assert ris_score(noisy, sets, classes, 10) < best
    chance = ris_score(shuffled, sets, classes, 10)
    assert chance < 0.6 * best


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3 or more"):
        ris_score(np.ones((4, 2)), np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), 1)
    with pytest.raises(ValueError, match="N x D"):
        ris_score(np.ones(4), np.zeros(4), np.zeros(4), 1)
