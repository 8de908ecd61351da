"""The graph's array rules against independent brute-force constructions."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from vidmine.graph.pairs import (
    INTER,
    INTRA,
    TRANSITIVE,
    cap_degree,
    cap_per_cluster,
    cluster_candidates,
    filter_inter,
    intra_edges,
    split_by_video,
    transitive_pairs,
)
from vidmine.storage.schema import PAIR_KINDS


def brute_force(intra: list[tuple[int, int]], inter: list[tuple[int, int]]) -> dict:
    """{frozenset pair: (kind, edge position)} by the rule, written as plainly as possible."""
    neighbours = defaultdict(set)
    for a, b in intra:
        neighbours[a].add(b)
        neighbours[b].add(a)
    found: dict[frozenset, tuple[int, int]] = {}

    def offer(x, y, kind, edge):
        if x == y:
            return
        key = frozenset((x, y))
        if key not in found or (kind, edge) < found[key]:
            found[key] = (kind, edge)

    for e, (a, b) in enumerate(intra):
        offer(a, b, INTRA, e)
    for e, (a, b) in enumerate(inter):
        offer(a, b, INTER, e)
        for b2 in neighbours[b]:
            offer(a, b2, TRANSITIVE, e)
        for a2 in neighbours[a]:
            offer(a2, b, TRANSITIVE, e)
            for b2 in neighbours[b]:
                offer(a2, b2, TRANSITIVE, e)
    return found


def as_dict(p) -> dict:
    return {frozenset((int(a), int(b))): (int(k), int(e))
            for a, b, k, e in zip(p.anchor, p.positive, p.kind, p.edge)}


def test_hand_made_graph_gives_exactly_the_papers_pairs():
    # tracks {0,1}, {2,3}, {4}; inter edges 1-2 and 0-4
    intra = [(0, 1), (2, 3)]
    inter = [(1, 2), (0, 4)]
    p = transitive_pairs(5, *np.array(intra).T, *np.array(inter).T)
    got = {(frozenset((int(a), int(b))), PAIR_KINDS[k]) for a, b, k in zip(p.anchor, p.positive, p.kind)}
    assert got == {
        (frozenset((0, 1)), "intra"), (frozenset((2, 3)), "intra"),
        (frozenset((1, 2)), "inter"), (frozenset((0, 4)), "inter"),
        # 1-2 with 1'=0 and 2'=3: <1,3>, <0,2>, <0,3>
        (frozenset((1, 3)), "transitive"), (frozenset((0, 2)), "transitive"),
        (frozenset((0, 3)), "transitive"),
        # 0-4 with 0'=1 and 4 alone: <1,4>
        (frozenset((1, 4)), "transitive"),
    }
    # the transitive pair <A', B'> keeps A' as anchor and names its inter edge
    row = [i for i in range(len(p)) if {int(p.anchor[i]), int(p.positive[i])} == {0, 3}][0]
    assert (int(p.anchor[row]), int(p.positive[row]), int(p.edge[row])) == (0, 3, 0)


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_tracks = 25
    track = np.sort(rng.integers(0, n_tracks, 120))
    frame = rng.permutation(len(track))
    mode = "first_last" if seed % 2 else "stride"
    nodes, a, b = intra_edges(track, frame, mode, stride=1 + seed % 3)
    index = np.full(len(track), -1)
    index[nodes] = np.arange(len(nodes))
    intra = list(zip(index[a].tolist(), index[b].tolist()))
    n = len(nodes)
    m = 3 * n
    ia, ib = rng.integers(0, n, m), rng.integers(0, n, m)
    ok = filter_inter(ia, ib, track[nodes], np.zeros(n, int), different_videos=False)
    inter = list(zip(ia[ok].tolist(), ib[ok].tolist()))
    p = transitive_pairs(n, index[a], index[b], ia[ok], ib[ok])
    assert as_dict(p) == brute_force(intra, inter)
    assert len(p) == len(as_dict(p))  # deduplicated


def test_duplicates_keep_the_most_direct_reason():
    # inter 0-2 makes transitive <0,3>, which is also an inter edge of its own
    intra = np.array([[0, 1], [2, 3]])
    inter = np.array([[1, 2], [0, 3], [0, 2]])
    p = transitive_pairs(4, intra[:, 0], intra[:, 1], inter[:, 0], inter[:, 1])
    d = as_dict(p)
    assert d[frozenset((0, 3))] == (INTER, 1)
    assert d[frozenset((0, 2))] == (INTER, 2)
    # <1,3> arises from inter 1-2 (edge 0) and from inter 0-3 (edge 1): the first edge wins
    assert d[frozenset((1, 3))] == (TRANSITIVE, 0)


def test_intra_edges_modes():
    track = np.array([7, 7, 7, 7, 9, 9, 5])
    frame = np.array([30, 10, 20, 40, 5, 1, 3])
    nodes, a, b = intra_edges(track, frame, "first_last")
    assert sorted(nodes.tolist()) == [1, 3, 4, 5, 6]     # middle crops of track 7 dropped
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 3), (5, 4)]
    nodes, a, b = intra_edges(track, frame, "stride", stride=2)
    assert len(nodes) == 7
    assert sorted(zip(a.tolist(), b.tolist())) == [(1, 0), (2, 3)]  # frames 10-30, 20-40


def test_inter_candidates_never_join_one_track_and_respect_the_cap():
    rng = np.random.default_rng(1)
    n = 2000
    track = rng.integers(0, 300, n)
    video = track // 10
    labels = rng.integers(0, 40, n)
    a, b = cluster_candidates(labels, rng.random(n), reach=4)
    assert (labels[a] == labels[b]).all()
    ok = filter_inter(a, b, track, video, different_videos=True)
    a, b = a[ok], b[ok]
    assert (track[a] != track[b]).all() and (video[a] != video[b]).all()
    base = rng.integers(0, 3, n)
    keep = cap_degree(a, b, rng.random(len(a)), cap=4, base_degree=base)
    degree = np.bincount(np.concatenate([a[keep], b[keep]]), minlength=n)
    assert (degree + base <= 4).all()
    assert keep.sum() > 0.6 * (4 * n - base.sum()) / 2  # most of the room gets used


def test_split_by_video_puts_no_video_in_both_splits():
    rng = np.random.default_rng(2)
    video = rng.integers(0, 50, 1000)
    anchor, positive = rng.integers(0, 1000, 5000), rng.integers(0, 1000, 5000)
    positive[:500] = anchor[:500]
    keep, is_val = split_by_video(video, anchor, positive, 0.3, seed=3)
    va, vb = video[anchor], video[positive]
    train = set(va[keep & ~is_val]) | set(vb[keep & ~is_val])
    val = set(va[keep & is_val]) | set(vb[keep & is_val])
    assert train and val and not train & val
    assert (va[keep & (va == vb)] == vb[keep & (va == vb)]).all()
    assert keep[va == vb].all()  # a pair within one video is never dropped


def test_cap_per_cluster_counts_what_a_cluster_already_has():
    cluster = np.array([0] * 10 + [1] * 3 + [-1] * 5)
    keep = cap_per_cluster(cluster, np.arange(18.0), cap=4, used=np.array([1, 0]))
    assert keep[:10].sum() == 3 and keep[:3].all()
    assert keep[10:13].all() and keep[13:].all()
