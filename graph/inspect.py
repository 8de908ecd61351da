"""Looking at the graph: figures for the whole graph, one crop's neighbourhood, and the chain
of edges behind one pair.

Whole-graph figures come from arrays (connected components with scipy.sparse.csgraph);
networkx is used where it is good, on one small neighbourhood at a time.
"""
from __future__ import annotations

import re

import networkx as nx
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy import func, or_, select

from vidmine.cli import MAX_ROW_ID
from vidmine.errors import UsageError
from vidmine.storage.schema import (
    EDGE_KINDS,
    PAIR_KINDS,
    clusters,
    crops,
    edges,
    embedding_sets,
    graph_rows,
    pairs,
    tracks,
    videos,
)
from vidmine.storage.store import Store
from vidmine.text import safe_name

from .build import load_graph
from .quality import pair_quality

MAX_NEIGHBOURHOOD_EDGES = 5000


def buckets(values: np.ndarray, zero: bool = False) -> dict[str, int]:
    """Counts in power-of-two buckets: '1', '2', '3-4', '5-8', ... (and '0')."""
    values = np.asarray(values, np.int64)
    out = {"0": int((values == 0).sum())} if zero else {}
    positive = values[values > 0]
    if len(positive) == 0:
        return out
    exp = np.ceil(np.log2(positive)).astype(np.int64)
    for e, count in zip(*np.unique(exp, return_counts=True)):
        lo, hi = (1 << (e - 1)) + 1 if e > 0 else 1, 1 << e
        out[str(hi) if lo == hi else f"{lo}-{hi}"] = int(count)
    return out


def size_summary(sizes: np.ndarray) -> dict:
    if len(sizes) == 0:
        return {"count": 0}
    return {"count": len(sizes), "min": int(sizes.min()), "median": float(np.median(sizes)),
            "mean": round(float(sizes.mean()), 3), "max": int(sizes.max()),
            "histogram": buckets(sizes)}


def require_crops(store: Store) -> int:
    with store.index.read() as conn:
        n = conn.execute(select(func.count()).select_from(crops)
                         .where(crops.c.kind == "object")).scalar_one()
    if n == 0:
        raise UsageError("the index has no object crops yet (mine some videos first)")
    return n


def stats(store: Store) -> dict:
    """Nodes, edges and pairs by kind, clusters, components, degrees, pairs per video."""
    n_crops = require_crops(store)
    g = load_graph(store)
    with store.index.read() as conn:
        by_kind_split = conn.execute(select(pairs.c.kind, pairs.c.split, func.count())
                                     .where(graph_rows(pairs)).group_by(pairs.c.kind, pairs.c.split)).all()
        n_tracks = conn.execute(select(func.count()).select_from(tracks)).scalar_one()
        n_sets = conn.execute(select(func.count()).select_from(embedding_sets)).scalar_one()
        crop_video = store.index.read_columns(conn, select(crops.c.id, crops.c.video_id)
                                              .where(crops.c.kind == "object").order_by(crops.c.id),
                                              dtypes=dict(id=np.int64, video_id=np.int64))
    n = len(g.node)
    a, b = g.index_of(g.edge_src), g.index_of(g.edge_dst)
    degree = np.bincount(np.concatenate([a, b]), minlength=n)
    if n:
        adjacency = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
        n_comp, comp = connected_components(adjacency, directed=False)
        comp_sizes = np.bincount(comp)
    else:
        n_comp, comp_sizes = 0, np.zeros(0, np.int64)
    pairs_by_kind: dict[str, dict[str, int]] = {}
    for kind, split, count in by_kind_split:
        pairs_by_kind.setdefault(kind, {})[split] = int(count)
    video_of = crop_video["video_id"][np.searchsorted(crop_video["id"], g.pair_anchor)]
    video_pos = crop_video["video_id"][np.searchsorted(crop_video["id"], g.pair_positive)]
    per_video = np.unique(np.concatenate([video_of, video_pos[video_pos != video_of]]),
                          return_counts=True)
    top = np.argsort(-per_video[1], kind="stable")[:5]
    quality = pair_quality(store, g)
    return {
        "crops": int(n_crops), "tracks": int(n_tracks), "embedding_sets": int(n_sets),
        "nodes": int(n),
        "edges": {k: int((g.edge_kind == k).sum()) for k in EDGE_KINDS},
        "pairs": {"total": len(g.pair_anchor),
                  **{k: int((g.pair_kind == k).sum()) for k in PAIR_KINDS}},
        "pairs_by_split": pairs_by_kind,
        "clusters": size_summary(np.unique(g.fine, return_counts=True)[1]),
        "coarse_clusters": len(np.unique(g.coarse)),
        "components": {**size_summary(comp_sizes), "count": int(n_comp)},
        "degree_histogram": buckets(degree, zero=True),
        "pairs_per_video": {**size_summary(per_video[1]),
                            "top": {str(int(per_video[0][i])): int(per_video[1][i]) for i in top}},
        **({"pair_quality": quality} if quality is not None else {}),
    }


def crop_info(store: Store, crop_ids) -> dict[int, dict]:
    """Video, track, frame, path and cluster of each crop, by id."""
    ids = sorted({int(i) for i in crop_ids})
    with store.index.read() as conn:
        rows = conn.execute(select(crops.c.id, crops.c.video_id, crops.c.track_id,
                                   crops.c.frame_index, videos.c.path)
                            .join(videos, videos.c.id == crops.c.video_id)
                            .where(crops.c.id.in_(ids))).all()
        labels = dict(((c, (co, f)) for c, co, f in conn.execute(
            select(clusters.c.crop_id, clusters.c.coarse, clusters.c.fine)
            .where(clusters.c.crop_id.in_(ids) & graph_rows(clusters)))))
    return {r.id: {"crop": r.id, "video": r.video_id, "video_path": r.path, "track": r.track_id,
                   "frame": r.frame_index, "coarse": labels.get(r.id, (None, None))[0],
                   "cluster": labels.get(r.id, (None, None))[1]} for r in rows}


def require_node(store: Store, crop_id: int) -> dict:
    info = crop_info(store, [crop_id]).get(crop_id)
    if info is None:
        raise UsageError(f"no crop {crop_id} in the index")
    if info["cluster"] is None:
        with store.index.read() as conn:
            built = conn.execute(select(clusters.c.crop_id).where(graph_rows(clusters)).limit(1)).first()
        if built is None:
            raise UsageError("no graph yet: run `vidmine-graph build` first")
        raise UsageError(f"crop {crop_id} is not a graph node (not chosen by the intra mode, "
                         "or mined after the last build)")
    return info


def _edge_dict(row) -> dict:
    return {"edge": row.id, "kind": row.kind, "src": row.src, "dst": row.dst,
            "weight": None if row.weight is None else round(float(row.weight), 4),
            "cluster": row.cluster}


def neighbourhood(store: Store, crop_id: int, radius: int = 1) -> nx.Graph:
    """The ego graph of a crop: every node within ``radius`` edges, with edge attributes."""
    graph = nx.Graph()
    graph.add_node(crop_id)
    frontier = {crop_id}
    for _ in range(radius):
        with store.index.read() as conn:
            rows = conn.execute(select(edges).where(
                graph_rows(edges) & or_(edges.c.src.in_(frontier), edges.c.dst.in_(frontier)))
                .limit(MAX_NEIGHBOURHOOD_EDGES)).all()
        before = set(graph)
        for r in rows:
            graph.add_edge(r.src, r.dst, **_edge_dict(r))
        frontier = set(graph) - before
        if not frontier:
            break
    return nx.ego_graph(graph, crop_id, radius=radius)


def show(store: Store, crop_id: int, radius: int = 1) -> dict:
    info = require_node(store, crop_id)
    ego = neighbourhood(store, crop_id, radius)
    nodes = crop_info(store, list(ego))
    hops = nx.single_source_shortest_path_length(ego, crop_id)
    with store.index.read() as conn:
        counts = dict(conn.execute(select(pairs.c.kind, func.count()).where(
            graph_rows(pairs) & or_(pairs.c.anchor == crop_id, pairs.c.positive == crop_id))
            .group_by(pairs.c.kind)).all())
    return {"node": info, "radius": radius,
            "nodes": [nodes[n] | {"hops": hops[n]} for n in sorted(ego, key=lambda n: (hops[n], n))],
            "edges": sorted((d for _, _, d in ego.edges(data=True)), key=lambda d: d["edge"]),
            "pairs": {k: int(v) for k, v in counts.items()}}


def format_show(report: dict) -> str:
    node = report["node"]
    lines = [f"crop {node['crop']}: video {node['video']} ({safe_name(node['video_path'])}), "
             f"track {node['track']}, frame {node['frame']}, cluster {node['cluster']}",
             f"neighbourhood (radius {report['radius']}): {len(report['nodes'])} nodes, "
             f"{len(report['edges'])} edges"]
    for e in report["edges"]:
        extra = f", cluster {e['cluster']}, similarity {e['weight']}" if e["kind"] == "inter" else ""
        lines.append(f"  {e['src']} -{e['kind']}- {e['dst']}  (edge {e['edge']}{extra})")
    pairs_text = ", ".join(f"{k} {v}" for k, v in sorted(report["pairs"].items())) or "none"
    lines.append(f"pairs with this crop: {pairs_text}")
    return "\n".join(lines)


def find_pair(store: Store, ref: str) -> dict:
    """A pair by id ('12') or by its two crops ('5,40' or '5:40', either order)."""
    ref = ref.strip()
    if any(int(n) > MAX_ROW_ID for n in re.findall(r"\d+", ref)):
        raise UsageError(f"no pair or crop has an id as large as in {ref!r}")
    with store.index.read() as conn:
        if re.fullmatch(r"\d+", ref):
            row = conn.execute(select(pairs).where((pairs.c.id == int(ref)) & graph_rows(pairs))).first()
            if row is None:
                raise UsageError(f"no graph pair with id {ref}")
            return dict(row._mapping)
        match = re.fullmatch(r"(\d+)\s*[,:]\s*(\d+)", ref)
        if not match:
            raise UsageError(f"a pair is an id (12) or two crop ids (5,40), not {ref!r}")
        a, b = int(match[1]), int(match[2])
        row = conn.execute(select(pairs).where(graph_rows(pairs) & or_(
            (pairs.c.anchor == a) & (pairs.c.positive == b),
            (pairs.c.anchor == b) & (pairs.c.positive == a))).limit(1)).first()
    if row is None:
        raise UsageError(f"no graph pair joins crops {a} and {b}")
    return dict(row._mapping)


def _intra_edge(conn, x: int, y: int):
    return conn.execute(select(edges).where(
        graph_rows(edges) & (edges.c.kind == "intra") & or_(
            (edges.c.src == x) & (edges.c.dst == y), (edges.c.src == y) & (edges.c.dst == x)))
        .limit(1)).first()


def explain(store: Store, ref: str) -> dict:
    """Why a pair exists: its kind and the chain of edges from anchor to positive.

    A transitive pair <A',B'> made by inter edge A-B reads A' -intra- A -inter- B -intra- B'
    (a side is left out where the pair's crop is the edge's own end)."""
    pair = find_pair(store, ref)
    anchor, positive = pair["anchor"], pair["positive"]
    with store.index.read() as conn:
        made_by = conn.execute(select(edges).where(edges.c.id == pair["edge_id"])).first()
        if made_by is None:
            raise UsageError(f"pair {pair['id']} has no edge behind it (the graph is damaged: "
                             "run `vidmine-graph build --rebuild`)")
        chain = [made_by]
        if pair["kind"] == "transitive":
            a, b = made_by.src, made_by.dst
            if anchor != a and _intra_edge(conn, anchor, a) is None:
                a, b = b, a  # the edge runs from the positive's side
            if anchor != a:
                chain.insert(0, _intra_edge(conn, anchor, a))
            if positive != b:
                chain.append(_intra_edge(conn, b, positive))
    if any(step is None for step in chain):
        raise UsageError(f"pair {pair['id']}: an intra edge of its chain is missing")
    steps, at = [], anchor
    for e in chain:  # orient each edge along the walk from anchor to positive
        step = _edge_dict(e)
        if step["src"] != at:
            step["src"], step["dst"] = step["dst"], step["src"]
        at = step["dst"]
        steps.append(step)
    info = crop_info(store, [anchor, positive] + [s["dst"] for s in steps])
    for step in steps:
        step["src_track"], step["dst_track"] = info[step["src"]]["track"], info[step["dst"]]["track"]
        step["src_video"], step["dst_video"] = info[step["src"]]["video"], info[step["dst"]]["video"]
    return {"pair": pair["id"], "kind": pair["kind"], "split": pair["split"], "anchor": anchor,
            "positive": positive, "edge": pair["edge_id"], "chain": steps,
            "crops": [anchor] + [s["dst"] for s in steps]}


def format_explain(report: dict) -> str:
    lines = [f"pair {report['pair']} ({report['kind']}, {report['split']}): "
             f"crop {report['anchor']} ~ crop {report['positive']}, made by edge {report['edge']}"]
    for s in report["chain"]:
        if s["kind"] == "intra":
            why = f"same track {s['src_track']}"
        else:
            why = (f"cluster {s['cluster']}, similarity {s['weight']}, tracks "
                   f"{s['src_track']}/{s['dst_track']}, videos {s['src_video']}/{s['dst_video']}")
        lines.append(f"  {s['src']} -{s['kind']}- {s['dst']}  (edge {s['edge']}: {why})")
    return "\n".join(lines)
