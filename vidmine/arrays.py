"""Array helpers that several packages need on large id columns."""
from __future__ import annotations

import numpy as np


def lookup_sorted(sorted_keys: np.ndarray, keys) -> np.ndarray:
    """Position of each of ``keys`` in the sorted array ``sorted_keys``; -1 where absent.
    One searchsorted, so it serves millions of crop ids."""
    keys = np.asarray(keys, np.int64)
    if len(sorted_keys) == 0:
        return np.full(len(keys), -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, pos, -1)
