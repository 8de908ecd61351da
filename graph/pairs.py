"""The graph's rules on arrays: intra edges, inter edges from clusters, transitive pairs.

Everything here works on dense node indices (0..n-1) and numpy arrays, never a Python loop
over nodes or edges, so one build over millions of crops takes seconds. ``graph.build``
maps crop ids to indices, feeds these functions and writes their output to SQL.

Pair kinds are coded ``INTRA < INTER < TRANSITIVE``; when one pair of crops arises several
ways, the lowest code (the most direct reason), then the lowest edge, is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidmine.storage.schema import PAIR_KINDS

# Codes of the pair kinds: positions in PAIR_KINDS, the order of preference.
INTRA, INTER, TRANSITIVE = (PAIR_KINDS.index(k) for k in ("intra", "inter", "transitive"))

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stable pseudo-random uint64 per value (splitmix64): orders and splits that do not
    change when more data arrives."""
    with np.errstate(over="ignore"):
        z = np.asarray(x).astype(np.uint64) + np.uint64(seed + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_hash(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """``mix64`` as a float in [0, 1)."""
    return (mix64(x, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def ragged_arange(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For counts [2, 0, 3]: owners [0, 0, 2, 2, 2] and positions [0, 1, 0, 1, 2]."""
    counts = np.asarray(counts, np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return owner, np.arange(len(owner), dtype=np.int64) - starts[owner]


def sorted_order(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stable argsort of integer ``key``, the sorted keys). Several times faster than
    ``np.argsort`` when key and position fit in 64 bits together: they are packed into one
    uint64 and sorted by value (numpy's value sort is vectorized; its argsort is not)."""
    key = np.asarray(key, np.int64)
    m = len(key)
    if m == 0:
        return np.zeros(0, np.int64), key
    low = int(key.min())
    bits = max(1, (m - 1).bit_length())
    if int(key.max()) - low >= (1 << (64 - bits)):
        order = np.argsort(key, kind="stable")
        return order, key[order]
    packed = (key - low).astype(np.uint64)
    packed <<= np.uint64(bits)
    packed |= np.arange(m, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << bits) - 1)).astype(np.int64)
    packed >>= np.uint64(bits)
    return order, packed.astype(np.int64) + low


def sort_by(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Stable order by (primary, secondary), both integer arrays."""
    if len(primary) == 0:
        return np.zeros(0, np.int64)
    p = np.asarray(primary, np.int64) - int(np.min(primary))
    q = np.asarray(secondary, np.int64) - int(np.min(secondary))
    span = int(q.max()) + 1
    if int(p.max()) < (1 << 62) // span:
        return sorted_order(p * span + q)[0]
    return np.lexsort((q, p))


def group_rank(groups: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Rank of each element inside its group, smallest integer ``priority`` first (ties by
    position), 0-based."""
    m = len(groups)
    order = sort_by(groups, priority)
    sorted_groups = np.asarray(groups)[order]
    first = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]] if m else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(m), 0)) if m else first
    rank = np.empty(m, np.int64)
    rank[order] = np.arange(m) - start
    return rank


def hash_priority(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A stable pseudo-random integer priority in [0, 2^20) per value (few bits, so that it
    packs with a group id into one sort key)."""
    return (mix64(x, seed) >> np.uint64(44)).astype(np.int64)


def crop_keys(video: np.ndarray, crop_id: np.ndarray) -> np.ndarray:
    """A key per crop that does not depend on the order in which videos were committed: its
    video id and its place among that video's crops. One worker commits a video whole, in
    one order; several workers interleave the crop ids of their videos from run to run."""
    video = np.asarray(video, np.int64)
    return (video << np.int64(32)) | group_rank(video, crop_id)


def pair_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One uint64 per unordered pair of 64-bit keys (``crop_keys``), for priorities."""
    lo, hi = np.minimum(a, b).astype(np.uint64), np.maximum(a, b).astype(np.uint64)
    return mix64(lo) ^ hi


def pair_key(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of node indices."""
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    return lo * np.int64(n) + hi


# -- intra-instance edges ----------------------------------------------------------------
def intra_edges(track: np.ndarray, frame: np.ndarray, mode: str, stride: int = 1):
    """Select graph nodes among the crops of tracks and join them.

    ``first_last``: the first and last crop of each track are nodes, joined by one edge
    (a one-crop track is a lone node). ``stride``: every crop is a node and crop i of a
    track (in frame order) is joined with crop i + stride.
    Returns (node positions into the inputs, src positions, dst positions).
    """
    order = sort_by(track, frame)
    t = track[order]
    first = np.r_[True, t[1:] != t[:-1]]
    last = np.r_[t[1:] != t[:-1], True]
    if mode == "first_last":
        nodes = order[first | last]
        multi = first & ~last  # tracks with two or more crops
        src = order[multi]
        dst = order[last & ~first]
        return np.sort(nodes), src, dst
    if mode == "stride":
        pos = np.arange(len(order))
        j = pos + stride
        ok = j < len(order)
        ok[ok] = t[j[ok]] == t[pos[ok]]
        return np.sort(order), order[pos[ok]], order[j[ok]]
    raise ValueError(f"unknown intra mode {mode!r}")


# -- inter-instance edges ----------------------------------------------------------------
def cluster_candidates(labels: np.ndarray, order_key: np.ndarray, reach: int):
    """Candidate inter edges inside each cluster: members in a stable pseudo-random ring
    (by integer ``order_key``), each joined to the next ``reach`` members. Cost
    O(n * reach) however large a cluster is. Returns (a, b) node indices, each pair once."""
    order = sort_by(labels, order_key)
    lab = labels[order]
    first = np.r_[True, lab[1:] != lab[:-1]]
    group = np.cumsum(first) - 1
    start = np.flatnonzero(first)[group]
    size = np.bincount(group)[group]
    pos = np.arange(len(order)) - start
    src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for d in range(1, reach + 1):  # a loop over offsets, not over nodes
        # offset d and offset size - d make the same pairs: take each once
        ok = (2 * d < size) | ((2 * d == size) & (pos < d))
        src.append(order[ok])
        dst.append(order[start[ok] + (pos[ok] + d) % size[ok]])
    return np.concatenate(src), np.concatenate(dst)


def filter_inter(a, b, track, video, different_videos: bool):
    """Inter edges join different instances: never two crops of one track; optionally
    never two crops of one video."""
    ok = track[a] != track[b]
    if different_videos:
        ok &= video[a] != video[b]
    return ok


def cap_degree(a: np.ndarray, b: np.ndarray, weight: np.ndarray, cap: int,
               base_degree: np.ndarray | None = None) -> np.ndarray:
    """Mask of edges to keep so no node ends with more than ``cap`` edges (counting
    ``base_degree`` it already has); each node keeps its heaviest edges."""
    m = len(a)
    if m == 0:
        return np.zeros(0, bool)
    ends = np.concatenate([a, b])
    heavier_first = np.round(-np.asarray(weight, np.float64) * (1 << 15)).astype(np.int64)
    rank = group_rank(ends, np.concatenate([heavier_first, heavier_first]))
    room = cap - (base_degree[ends] if base_degree is not None else 0)
    allowed = rank < room
    return allowed[:m] & allowed[m:]


# -- pairs -------------------------------------------------------------------------------
@dataclass
class Pairs:
    anchor: np.ndarray     # node indices
    positive: np.ndarray
    kind: np.ndarray       # INTRA | INTER | TRANSITIVE
    edge: np.ndarray       # position of the edge that made it (intra or inter edge list)

    def __len__(self) -> int:
        return len(self.anchor)

    def take(self, mask_or_index) -> Pairs:
        return Pairs(self.anchor[mask_or_index], self.positive[mask_or_index],
                     self.kind[mask_or_index], self.edge[mask_or_index])


def adjacency(n: int, src: np.ndarray, dst: np.ndarray):
    """CSR of the undirected intra graph: (indptr, neighbour, edge position)."""
    ends = np.concatenate([src, dst])
    other = np.concatenate([dst, src])
    edge = np.concatenate([np.arange(len(src)), np.arange(len(src))])
    order = sorted_order(ends)[0]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(ends, minlength=n), out=indptr[1:])
    return indptr, other[order], edge[order]


def transitive_pairs(n: int, intra_src, intra_dst, inter_src, inter_dst,
                     intra_for_neighbours: tuple | None = None) -> Pairs:
    """All pairs of the rule, deduplicated.

    Intra edge A-A' gives <A,A'>; inter edge A-B gives <A,B>, and with every intra
    neighbour A' of A and B' of B: <A,B'>, <A',B>, <A',B'>. ``edge`` of an intra pair
    indexes the intra edges, of an inter or transitive pair the inter edges.
    ``intra_for_neighbours`` (src, dst) gives the intra graph to take neighbours from when
    it is larger than the intra edges that should become pairs (incremental builds).
    """
    nsrc, ndst = intra_for_neighbours if intra_for_neighbours is not None else (intra_src, intra_dst)
    indptr, nbr, _ = adjacency(n, nsrc, ndst)
    # Each node's side: itself, then its intra neighbours ([A, A'...]), as one CSR.
    side_ptr = indptr + np.arange(n + 1)
    side = np.empty(n + len(nbr), np.int64)
    side[side_ptr[:-1]] = np.arange(n)
    side[np.arange(len(nbr)) + np.repeat(np.arange(1, n + 1), np.diff(indptr))] = nbr
    a, b = np.asarray(inter_src, np.int64), np.asarray(inter_dst, np.int64)
    # Every combination of A's side and B's side but (A, B) itself is a transitive pair;
    # generated edge by edge, so rows come in (kind, edge) order.
    size_a, size_b = np.diff(side_ptr)[a], np.diff(side_ptr)[b]
    owner, w = ragged_arange(size_a * size_b - 1)
    i, j = np.divmod(w + 1, size_b[owner])
    anchor = side[side_ptr[a][owner] + i]
    positive = side[side_ptr[b][owner] + j]
    pairs = Pairs(np.concatenate([np.asarray(intra_src, np.int64), a, anchor]),
                  np.concatenate([np.asarray(intra_dst, np.int64), b, positive]),
                  np.concatenate([np.full(len(intra_src), INTRA, np.int8),
                                  np.full(len(a), INTER, np.int8),
                                  np.full(len(owner), TRANSITIVE, np.int8)]),
                  np.concatenate([np.arange(len(intra_src)), np.arange(len(a)), owner]))
    return dedup(pairs, n)


def dedup(pairs: Pairs, n: int) -> Pairs:
    """One row per unordered pair of two different crops: the first row of each, so rows
    must come in the order of preference (lowest kind, then lowest edge)."""
    distinct = pairs.anchor != pairs.positive
    if not distinct.all():
        pairs = pairs.take(distinct)
    if len(pairs) == 0:
        return pairs
    order, key = sorted_order(pair_key(pairs.anchor, pairs.positive, n))
    first = np.zeros(len(key), bool)
    first[order[np.r_[True, key[1:] != key[:-1]]]] = True
    return pairs.take(first)  # a mask keeps the rows in order, and reads them in sequence


def cap_per_cluster(cluster: np.ndarray, priority: np.ndarray, cap: int,
                    used: np.ndarray | None = None) -> np.ndarray:
    """Mask keeping at most ``cap`` (minus ``used`` already) items per cluster, lowest
    integer ``priority`` first; items with cluster < 0 are never capped."""
    keep = np.ones(len(cluster), bool)
    capped = cluster >= 0
    if cap <= 0 or not capped.any():
        return keep
    rank = group_rank(cluster[capped], priority[capped])
    room = cap - (used[cluster[capped]] if used is not None else 0)
    keep[capped] = rank < room
    return keep


def split_by_video(video: np.ndarray, anchor: np.ndarray, positive: np.ndarray,
                   val_fraction: float, seed: int):
    """Each video is train or val (stably, by a hash of its id); a pair goes to the split
    of its videos, and a pair whose two videos disagree is dropped so that no video
    appears in both splits. ``video``: the video of each node. Returns (keep, is_val)."""
    val = unit_hash(video, seed) < val_fraction
    val_a, val_b = val[anchor], val[positive]
    return val_a == val_b, val_a
