"""Top-K Representation Invariance Score (Purushwalkam & Gupta, 2020), exactly as docs/design.md.

Features ``F`` (N images x D units), images grouped into *sets* (one object under one kind
of transformation) and sets into *classes*:

1. p = min(100 (1 - 1/C), 95), i = floor(N p / 100). Per unit: t+ = i-th of the column
   sorted ascending, G = fraction of images with F >= t+; t- = i-th sorted descending.
2. For every set with >= 3 images: c+ = #(F > t+), c- = #(F < t-), c = max(c+, c-); only
   when c > 0 add c / |s| to the class's sum for that unit and count the set.
3. L(class) = sum / count (0 where no set fired); invariance I = L / G.
4. Mean of the K largest I per class, mean over classes, times (100 - p).

Vectorized over units in column blocks, so 50k images x 2048 units take seconds.
"""
from __future__ import annotations

import numpy as np


def _group_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum consecutive row groups (rows already sorted by group) in one reduceat."""
    return np.add.reduceat(values, starts, axis=0)


MIN_SET_SIZE = 3   # RIS counts only sets of at least this many images


def scorable(set_ids: np.ndarray) -> bool:
    """Does any set hold MIN_SET_SIZE or more images, so that RIS has something to score?"""
    return np.unique(set_ids, return_counts=True)[1].max(initial=0) >= MIN_SET_SIZE


def ris_per_unit(features: np.ndarray, set_ids: np.ndarray, class_ids: np.ndarray,
                 block: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """Invariance I (classes x units), the sorted class ids, and p."""
    F = np.asarray(features, dtype=np.float32)
    set_ids, class_ids = np.asarray(set_ids), np.asarray(class_ids)
    if F.ndim != 2 or len(F) != len(set_ids) or len(F) != len(class_ids):
        raise ValueError("features must be N x D with one set id and one class id per row")
    n, d = F.shape
    classes = np.unique(class_ids)
    p = min(100.0 * (1.0 - 1.0 / len(classes)), 95.0)
    i = int(np.floor(n * p / 100.0))

    # Sets with >= MIN_SET_SIZE images, their rows grouped together, and each set's class.
    uniq_sets, set_index, set_sizes = np.unique(set_ids, return_inverse=True, return_counts=True)
    keep_rows = set_sizes[set_index] >= MIN_SET_SIZE
    if not keep_rows.any():
        raise ValueError(f"no set has {MIN_SET_SIZE} or more images")
    rows = np.flatnonzero(keep_rows)
    rows = rows[np.argsort(set_index[rows], kind="stable")]
    row_set = set_index[rows]
    starts = np.flatnonzero(np.r_[True, row_set[1:] != row_set[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)]).astype(np.float32)
    set_class = class_ids[rows[starts]]
    # A set belongs to the class of its images; sets are grouped by class for step 3.
    class_order = np.argsort(set_class, kind="stable")
    class_of_set = np.searchsorted(classes, set_class[class_order])
    class_starts = np.flatnonzero(np.r_[True, class_of_set[1:] != class_of_set[:-1]])
    present = class_of_set[class_starts]

    invariance = np.zeros((len(classes), d), dtype=np.float64)
    for lo in range(0, d, block):
        cols = F[:, lo:lo + block]
        part = np.partition(cols, sorted({i, n - 1 - i}), axis=0)
        t_pos = part[i]
        t_neg = part[n - 1 - i]                        # i-th element of the descending sort
        global_rate = (cols >= t_pos).mean(axis=0)
        sub = cols[rows]
        c_pos = _group_sums((sub > t_pos).astype(np.int32), starts)
        c_neg = _group_sums((sub < t_neg).astype(np.int32), starts)
        c = np.maximum(c_pos, c_neg)[class_order]
        frac = c / sizes[class_order, None]
        fired = (c > 0).astype(np.int32)
        total = _group_sums(frac, class_starts)
        count = _group_sums(fired, class_starts)
        local = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        invariance[present, lo:lo + block] = local / global_rate
    return invariance, classes, p


def ris_per_class(features: np.ndarray, set_ids: np.ndarray, class_ids: np.ndarray,
                  k: int) -> np.ndarray:
    """Each class's term of Top-K RIS (step 4 before the mean over classes), in the order of
    the sorted class ids: the units a paired interval resamples (``evaluation.compare``)."""
    invariance, _, p = ris_per_unit(features, set_ids, class_ids)
    k = min(int(k), invariance.shape[1])
    if k < 1:
        raise ValueError("k must be at least 1")
    top = -np.partition(-invariance, k - 1, axis=1)[:, :k]
    return top.mean(axis=1) * (100.0 - p)


def ris_score(features: np.ndarray, set_ids: np.ndarray, class_ids: np.ndarray, k: int) -> float:
    """Top-K RIS of ``features`` (N x D) for images in sets ``set_ids`` of classes ``class_ids``."""
    return float(ris_per_class(features, set_ids, class_ids, k).mean())
