"""Top-K RIS on 50k images x 2048 units (ResNet-50 pooled features): vectorized time, and
the ratio against the plain per-unit loop of the definition on a slice of the units.

    python benchmarks/ris.py [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vidmine.evaluation.ris import ris_score


def loop_units(F, sets, classes):
    """The definition unit by unit (numpy inside a set loop): the baseline."""
    n = len(F)
    p = min(100 * (1 - 1 / len(np.unique(classes))), 95)
    i = int(n * p / 100)
    groups = [np.flatnonzero(sets == s) for s in np.unique(sets)]
    groups = [g for g in groups if len(g) >= 3]
    for u in range(F.shape[1]):
        col = F[:, u]
        srt = np.sort(col)
        t_pos, t_neg = srt[i], srt[n - 1 - i]
        for g in groups:
            max(np.sum(col[g] > t_pos), np.sum(col[g] < t_neg))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    F = np.maximum(rng.normal(size=(50_000, 2048)).astype(np.float32), 0)
    sets = rng.integers(0, 5000, 50_000)
    classes = sets // 50
    t0 = time.perf_counter()
    ris_score(F, sets, classes, 25)
    vec = time.perf_counter() - t0
    units = 16
    t0 = time.perf_counter()
    loop_units(F[:, :units], sets, classes)
    loop = (time.perf_counter() - t0) * 2048 / units
    res = {"vectorized_s": vec, "loop_s_extrapolated": loop, "speedup": loop / vec}
    print(json.dumps(res) if args.json else
          f"RIS 50k x 2048: vectorized {vec:.1f}s; per-unit loop ~{loop:.0f}s "
          f"(from {units} units); speed-up {loop / vec:.0f}x")


if __name__ == "__main__":
    main()
