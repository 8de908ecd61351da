"""Transitive pairs for a synthetic graph of 1M crops in 100k tracks: the vectorized builder
(graph.pairs) against a plain networkx implementation of the same rule, in one run.

Arrays only, no images or database. The graph: tracks of ~10 crops in videos of 20 tracks,
intra edges at stride 1 (every crop a node), crops spread over fine clusters of ~20, inter
edges from the clusters between different videos, at most 4 per node. Both sides then
turn the same intra and inter edges into deduplicated intra/inter/transitive pairs with
their provenance edge, and the outputs are checked to be identical.

networkx is slow, so by default it runs on a graph of the same shape at 1/10 of the size
(``--nx-fraction``) and its time is scaled up by the edge count (its work is linear in
edges); that scaling is printed as such. ``--nx-fraction 1`` runs it on the full graph.

    python benchmarks/graph.py [--crops 1000000] [--tracks 100000] [--nx-fraction 0.1] [--json]
"""
from __future__ import annotations

import argparse
import json
import time

import networkx as nx
import numpy as np

from vidmine.graph.pairs import (
    cap_degree,
    cap_per_cluster,
    cluster_candidates,
    filter_inter,
    hash_priority,
    intra_edges,
    pair_key,
    split_by_video,
    transitive_pairs,
    unit_hash,
)

MAX_INTER = 4


def synthetic(n_crops: int, n_tracks: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    track = np.sort(rng.integers(0, n_tracks, n_crops))
    frame = rng.permutation(n_crops)
    video = track // 20
    cluster = rng.integers(0, max(1, n_crops // 20), n_crops)
    return {"track": track, "frame": frame, "video": video, "cluster": cluster}


def vectorized_build(g: dict) -> tuple[dict, dict]:
    """The build's array pipeline: nodes, intra edges, inter edges, pairs, caps, split."""
    t = {}
    t0 = time.perf_counter()
    nodes, ia, ib = intra_edges(g["track"], g["frame"], "stride", 1)
    track, video, cluster = g["track"][nodes], g["video"][nodes], g["cluster"][nodes]
    n = len(nodes)
    t["intra_edges"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a, b = cluster_candidates(cluster, hash_priority(np.arange(n)), MAX_INTER)
    ok = filter_inter(a, b, track, video, different_videos=True)
    a, b = a[ok], b[ok]
    weight = unit_hash(pair_key(a, b, n), 1)  # stands in for embedding similarity
    keep = cap_degree(a, b, weight, MAX_INTER)
    a, b = a[keep], b[keep]
    t["inter_edges"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = transitive_pairs(n, ia, ib, a, b)
    t["transitive_pairs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pair_cluster = np.full(len(p), -1, np.int64)
    from_inter = p.kind != 0
    pair_cluster[from_inter] = cluster[a[p.edge[from_inter]]]
    priority = hash_priority(pair_key(p.anchor, p.positive, n))
    p = p.take(cap_per_cluster(pair_cluster, priority, 2000))
    keep, _ = split_by_video(video, p.anchor, p.positive, 0.1, 0)
    t["caps_and_split"] = time.perf_counter() - t0
    t["total"] = sum(t.values())
    return t, {"n": n, "intra": (ia, ib), "inter": (a, b), "pairs": int(keep.sum())}


def networkx_pairs(n: int, intra: tuple, inter: tuple) -> dict:
    """The same rule written the plain way: a networkx graph and a loop over inter edges."""
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((int(u), int(v), {"kind": 0, "edge": e})
                         for e, (u, v) in enumerate(zip(*intra)))
    graph.add_edges_from((int(u), int(v), {"kind": 1, "edge": e, "src": int(u)})
                         for e, (u, v) in enumerate(zip(*inter)))
    found: dict[tuple[int, int], tuple[int, int]] = {}

    def offer(x, y, kind, edge):
        key = (x, y) if x < y else (y, x)
        if key not in found or (kind, edge) < found[key]:
            found[key] = (kind, edge)

    for u, v, d in graph.edges(data=True):
        if d["kind"] == 0:
            offer(u, v, 0, d["edge"])
    for u, v, d in graph.edges(data=True):
        if d["kind"] != 1:
            continue
        a, b, e = d["src"], v if d["src"] == u else u, d["edge"]
        offer(a, b, 1, e)
        mates_a = [w for w, dw in graph[a].items() if dw["kind"] == 0]
        mates_b = [w for w, dw in graph[b].items() if dw["kind"] == 0]
        for b2 in mates_b:
            offer(a, b2, 2, e)
        for a2 in mates_a:
            offer(a2, b, 2, e)
            for b2 in mates_b:
                offer(a2, b2, 2, e)
    return found


def compare(n_crops: int, n_tracks: int) -> dict:
    """Both implementations of the rule on one graph; their outputs must agree."""
    _, built = vectorized_build(synthetic(n_crops, n_tracks, seed=1))
    n, intra, inter = built["n"], built["intra"], built["inter"]
    t0 = time.perf_counter()
    p = transitive_pairs(n, *intra, *inter)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = networkx_pairs(n, intra, inter)
    t_nx = time.perf_counter() - t0
    mine = {(min(int(x), int(y)), max(int(x), int(y))): (int(k), int(e))
            for x, y, k, e in zip(p.anchor, p.positive, p.kind, p.edge)}
    if mine != found:
        raise SystemExit("benchmark: vectorized and networkx pairs differ")
    return {"crops": n_crops, "tracks": n_tracks, "edges": len(intra[0]) + len(inter[0]),
            "pairs": len(p), "vectorized_s": t_vec, "networkx_s": t_nx}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=1_000_000)
    ap.add_argument("--tracks", type=int, default=100_000)
    ap.add_argument("--nx-fraction", type=float, default=0.1,
                    help="size of the graph networkx runs on, as a fraction of the full one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    full_times, full = vectorized_build(synthetic(args.crops, args.tracks))
    full_edges = len(full["intra"][0]) + len(full["inter"][0])
    small = compare(int(args.crops * args.nx_fraction), int(args.tracks * args.nx_fraction))
    scale = full_edges / small["edges"]
    networkx_full = small["networkx_s"] * scale
    res = {
        "crops": args.crops, "tracks": args.tracks, "nodes": full["n"],
        "intra_edges": len(full["intra"][0]), "inter_edges": len(full["inter"][0]),
        "pairs_after_caps_and_split": full["pairs"],
        "vectorized_s": {k: round(v, 3) for k, v in full_times.items()},
        "networkx_sample": {k: round(v, 3) if isinstance(v, float) else v for k, v in small.items()},
        "networkx_scaled_s": round(networkx_full, 2),
        "networkx_scale_factor": round(scale, 2),
        "ratio_same_graph": round(small["networkx_s"] / small["vectorized_s"], 1),
        "ratio_full_build_vs_scaled_networkx_rule": round(networkx_full / full_times["total"], 1),
        "ratio_rule_vs_scaled_networkx_rule": round(networkx_full / full_times["transitive_pairs"], 1),
    }
    if args.json:
        print(json.dumps(res))
        return
    v = res["vectorized_s"]
    print(f"graph: {res['nodes']:,} nodes, {res['intra_edges']:,} intra + "
          f"{res['inter_edges']:,} inter edges, {res['pairs_after_caps_and_split']:,} pairs")
    print(f"vectorized build: {v['total']:.2f} s  (intra {v['intra_edges']:.2f}, inter "
          f"{v['inter_edges']:.2f}, transitive pairs {v['transitive_pairs']:.2f}, caps+split "
          f"{v['caps_and_split']:.2f})")
    s = res["networkx_sample"]
    print(f"same rule on a {s['crops']:,}-crop graph: vectorized {s['vectorized_s']:.3f} s, "
          f"networkx {s['networkx_s']:.2f} s -> {res['ratio_same_graph']}x (outputs identical)")
    print(f"networkx scaled to the full graph (x{res['networkx_scale_factor']} edges): "
          f"{res['networkx_scaled_s']:.1f} s")
    print(f"ratio, whole vectorized build vs networkx pair rule alone: "
          f"{res['ratio_full_build_vs_scaled_networkx_rule']}x")
    print(f"ratio, pair rule vs pair rule: {res['ratio_rule_vs_scaled_networkx_rule']}x")


if __name__ == "__main__":
    main()
