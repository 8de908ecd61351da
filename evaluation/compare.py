"""How sure is a difference between two networks on one held-out set?

On a small set (the demo's 18 objects) a network's score moves by a few points with which
objects happen to be held out, so a report that says "trained above untrained" also says by
how much that could move. Both networks are scored on the same units (the objects or
classes a score averages over), so the difference is *paired*: resample the units with
replacement and recompute the difference of the two scores (percentile bootstrap, Efron &
Tibshirani 1993, ch. 13). An interval that excludes 0 is a difference this set resolves;
one that spans 0 is not, however the means compare.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def paired_interval(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None,
                    resamples: int = RESAMPLES, level: float = LEVEL,
                    seed: int = 0) -> tuple[float, float, float]:
    """(difference, low, high): the weighted mean of ``a - b`` over units (``a``, ``b``: one
    score per unit; ``weights``: how much each unit counts in the score, e.g. its number of
    queries) and its ``level`` percentile-bootstrap interval over units resampled."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired scores need one value per unit, the same units for both")
    w = np.ones_like(a) if weights is None else np.asarray(weights, np.float64)
    diff = a - b
    point = float(np.sum(w * diff) / np.sum(w))
    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    # one weighted mean per resample, all resamples at once (resamples x units)
    means = np.sum(w[picks] * diff[picks], axis=1) / np.sum(w[picks], axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def against(per_unit: dict[str, np.ndarray], reference: str | None,
            weights: np.ndarray | None = None) -> dict[str, list[float]]:
    """For every model but ``reference``: [difference, low, high] of its score minus the
    reference's (``per_unit``: model -> one score per unit). {} without a reference."""
    if reference is None or reference not in per_unit:
        return {}
    return {name: list(paired_interval(scores, per_unit[reference], weights))
            for name, scores in per_unit.items() if name != reference}


def format_interval(diff: float, low: float, high: float, digits: int = 2) -> str:
    """"+0.04 [-0.01, +0.09]"."""
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
