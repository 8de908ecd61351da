"""Building the graph in SQL: nodes with their clusters, edges, and pairs with provenance.

A build reads the crops, the current graph and the embeddings into arrays, runs the rules
of :mod:`graph.pairs` on them and writes what is new in one transaction: ``clusters`` rows
for new nodes, ``edges`` (intra, inter), and ``pairs`` whose ``edge_id`` is the edge that
made them. Builds are incremental: crops already in the graph keep their cluster, edges and
pairs; new crops join the existing clusters (nearest centroid) and get new edges, and the
transitive rule runs over the new inter edges with the whole intra graph. ``rebuild``
replaces the whole graph in that same transaction, so a failed build loses nothing.

The current graph is everything in ``clusters``/``edges``/``pairs`` written by runs of
kind ``graph``; every build is one such run.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select

from vidmine.arrays import lookup_sorted
from vidmine.config import to_dict
from vidmine.errors import UsageError
from vidmine.storage.schema import EDGE_KINDS, PAIR_KINDS, clusters, crops, edges, graph_rows, pairs, runs
from vidmine.storage.store import Store

from . import cluster as clustering
from .config import GraphConfig
from .embed import HANDCRAFTED, Embeddings, checkpoint_of, embed, load_embeddings
from .pairs import (
    INTRA,
    cap_degree,
    cap_per_cluster,
    cluster_candidates,
    crop_keys,
    filter_inter,
    hash_priority,
    intra_edges,
    pair_hash,
    pair_key,
    split_by_video,
    transitive_pairs,
)

# settings a build must share with the graph it extends
STRUCTURAL = ("intra_mode", "intra_stride", "clustering")


@dataclass
class Graph:
    """The current graph as arrays (crop ids, not node indices)."""
    node: np.ndarray           # crop ids, sorted
    coarse: np.ndarray
    fine: np.ndarray
    edge_id: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_kind: np.ndarray      # 'intra' | 'inter'
    edge_cluster: np.ndarray   # fine cluster of an inter edge, -1 for intra
    pair_anchor: np.ndarray
    pair_positive: np.ndarray
    pair_kind: np.ndarray
    pair_edge: np.ndarray

    def index_of(self, crop_ids) -> np.ndarray:
        """Node index of each crop id; -1 for crops that are not graph nodes."""
        return lookup_sorted(self.node, crop_ids)


def load_graph(store: Store, with_pairs: bool = True) -> Graph:
    with store.index.read() as conn:
        rc = store.index.read_columns
        c = rc(conn, select(clusters.c.crop_id, clusters.c.coarse, clusters.c.fine)
               .where(graph_rows(clusters)).order_by(clusters.c.crop_id), dtypes=dict(
                   crop_id=np.int64, coarse=np.int64, fine=np.int64))
        e = rc(conn, select(edges.c.id, edges.c.src, edges.c.dst, edges.c.kind,
                            func.coalesce(edges.c.cluster, -1).label("cluster"))
               .where(graph_rows(edges)).order_by(edges.c.id), dtypes=dict(
                   id=np.int64, src=np.int64, dst=np.int64, kind=object, cluster=np.int64))
        if with_pairs:
            p = rc(conn, select(pairs.c.anchor, pairs.c.positive, pairs.c.kind, pairs.c.edge_id)
                   .where(graph_rows(pairs)), dtypes=dict(
                       anchor=np.int64, positive=np.int64, kind=object, edge_id=np.int64))
        else:
            p = {k: np.empty(0, np.int64) for k in ("anchor", "positive", "kind", "edge_id")}
    return Graph(c["crop_id"], c["coarse"], c["fine"], e["id"], e["src"], e["dst"],
                 e["kind"].astype(str), e["cluster"], p["anchor"], p["positive"],
                 p["kind"].astype(str), p["edge_id"])


def empty_graph() -> Graph:
    empty = np.empty(0, np.int64)
    return Graph(empty, empty, empty, empty, empty, empty, np.empty(0, str), empty,
                 empty, empty, np.empty(0, str), empty)


def last_build_config(store: Store) -> dict | None:
    with store.index.read() as conn:
        row = conn.execute(select(runs.c.config).where(
            (runs.c.kind == "graph") & (runs.c.status == "done"))
            .order_by(runs.c.id.desc()).limit(1)).scalar()
    return json.loads(row) if row else None


def read_object_crops(store: Store) -> dict[str, np.ndarray]:
    with store.index.read() as conn:
        cols = store.index.read_columns(conn, select(
            crops.c.id, crops.c.video_id, crops.c.track_id, crops.c.frame_index)
            .where((crops.c.kind == "object") & crops.c.track_id.is_not(None))
            .order_by(crops.c.id), dtypes=dict(id=np.int64, video_id=np.int64,
                                               track_id=np.int64, frame_index=np.int64))
    if len(cols["id"]) == 0:
        raise UsageError("the index has no object crops yet (mine some videos first)")
    cols["key"] = crop_keys(cols["video_id"], cols["id"])
    return cols


def _labels(cfg: GraphConfig, x: np.ndarray, old: np.ndarray, new: np.ndarray,
            graph: Graph, old_rows: np.ndarray, track: np.ndarray, key: np.ndarray):
    """(coarse, fine) of every node, and mutual-kNN edges (a, b, sim) when that is the mode.
    ``old``/``new``: masks over nodes; ``old_rows``: each old node's row in ``graph``;
    ``key``: each node's ``crop_keys``."""
    n = len(x)
    coarse = np.full(n, -1, np.int64)
    fine = np.full(n, -1, np.int64)
    coarse[old], fine[old] = graph.coarse[old_rows], graph.fine[old_rows]
    if cfg.clustering == "mutual_knn":
        a, b, sim = clustering.mutual_knn(x, cfg.knn_k, cfg.knn_threshold, track)
        comp = clustering.components(n, a, b)
        # a new node joins the cluster of an old node in its component, else a new cluster
        known = np.full(comp.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(known, comp[old], fine[old])
        fresh = known[comp] == np.iinfo(np.int64).max
        base = int(fine[old].max()) + 1 if old.any() else 0
        _, renumbered = np.unique(comp[new & fresh], return_inverse=True)
        fine[new & fresh] = base + renumbered
        fine[new & ~fresh] = known[comp[new & ~fresh]]
        coarse[new] = fine[new]
        return coarse, fine, (a, b, sim)
    if old.any():
        coarse[new], fine[new] = clustering.assign(x[old], coarse[old], fine[old], x[new])
        return coarse, fine, None
    # k-means seeds its centroids from row positions, and rows come in crop-id order, which
    # mining workers interleave differently from run to run: cluster in key order instead
    order = np.argsort(key, kind="stable")
    if cfg.clustering == "two_level":
        coarse[order], fine[order] = clustering.two_level(
            x[order], cfg.coarse_k, cfg.fine_k, cfg.cluster_size, cfg.kmeans_iters, cfg.seed)
    else:
        k = cfg.k or max(1, round(n / cfg.cluster_size))
        fine[order] = clustering.kmeans(x[order], k, cfg.kmeans_iters, cfg.seed)[0]
        coarse = fine.copy()
    return coarse, fine, None


def embeddings_for(store: Store, cfg: GraphConfig, nodes: np.ndarray, progress: bool = False):
    """Embeddings covering every node. A model named by ``cfg.embedding_model`` (a checkpoint,
    or 'handcrafted'): its sets. None: the newest sets (of whatever model), or, on a store never
    embedded, the hand-crafted descriptor's. Crops the chosen sets lack are embedded first with
    their model."""
    def chosen() -> Embeddings | None:
        if cfg.embedding_model is None:
            return load_embeddings(store)
        if cfg.embedding_model == HANDCRAFTED:
            return load_embeddings(store, model=HANDCRAFTED)
        return load_embeddings(store, checkpoint=checkpoint_of(cfg))
    emb = chosen()
    if emb is None or (emb.rows_of(nodes) < 0).any():
        model = cfg.embedding_model if emb is None else (emb.checkpoint or HANDCRAFTED)
        embed(store, dataclasses.replace(cfg, embedding_model=model), progress=progress)
        emb = chosen()
    return emb


def build(store: Store, cfg: GraphConfig, rebuild: bool = False, progress: bool = False) -> dict:
    """Add the crops mined since the last build to the graph (all crops with ``rebuild``).
    Returns the figures of the build (also stored as its run's summary)."""
    t0 = time.perf_counter()
    cols = read_object_crops(store)
    graph = load_graph(store) if not rebuild else empty_graph()
    previous = last_build_config(store)
    if len(graph.node) and previous:
        changed = [k for k in STRUCTURAL if previous.get(k) != getattr(cfg, k)]
        if changed:
            was = ", ".join(f"{k}={previous.get(k)!r}" for k in changed)
            raise UsageError(f"the graph was built with {was}; build with the same settings "
                             "or pass --rebuild")

    # nodes and intra edges, as positions into the crop columns
    node_pos, intra_a, intra_b = intra_edges(cols["track_id"], cols["frame_index"],
                                             cfg.intra_mode, cfg.intra_stride)
    node = cols["id"][node_pos]
    n = len(node)
    to_node = np.full(len(cols["id"]), -1, np.int64)
    to_node[node_pos] = np.arange(n)
    intra_a, intra_b = to_node[intra_a], to_node[intra_b]
    track, video = cols["track_id"][node_pos], cols["video_id"][node_pos]
    crop_key = cols["key"][node_pos]

    in_graph = np.isin(node, graph.node)
    new = ~in_graph
    summary = {"rebuild": rebuild, "nodes": n, "new_nodes": int(new.sum())}
    emb = embeddings_for(store, cfg, node, progress)
    x = emb.vectors[emb.rows_of(node)]
    with store.index.run("graph", to_dict(cfg) | {
            "rebuild": rebuild, "embedding_sets": emb.set_ids, "embedding_model": emb.model,
            "embedding_checkpoint": emb.checkpoint}) as run:
        run_id = run.id
        t_read = time.perf_counter() - t0
        old_rows = np.searchsorted(graph.node, node[in_graph])
        coarse, fine, knn_edges = _labels(cfg, x, in_graph, new, graph, old_rows, track, crop_key)
        t_cluster = time.perf_counter() - t0 - t_read

        # inter edges: candidates touching a new node, filtered, not already there, capped
        if knn_edges is None:
            a, b = cluster_candidates(fine, hash_priority(crop_key, cfg.seed),
                                      cfg.max_inter_per_node)
            weight = np.einsum("ij,ij->i", x[a], x[b])
        else:
            a, b, weight = knn_edges
        touch_new = new[a] | new[b]
        a, b, weight = a[touch_new], b[touch_new], weight[touch_new]
        ok = filter_inter(a, b, track, video, cfg.inter_different_videos)
        a, b, weight = a[ok], b[ok], weight[ok]
        is_inter = graph.edge_kind == "inter"
        old_a = np.searchsorted(node, graph.edge_src[is_inter])
        old_b = np.searchsorted(node, graph.edge_dst[is_inter])
        fresh = ~np.isin(pair_key(a, b, n), pair_key(old_a, old_b, n))
        a, b, weight = a[fresh], b[fresh], weight[fresh]
        base_degree = np.bincount(np.concatenate([old_a, old_b]), minlength=n)
        keep = cap_degree(a, b, weight, cfg.max_inter_per_node, base_degree)
        inter_a, inter_b, inter_w = a[keep], b[keep], weight[keep]
        inter_cluster = fine[inter_a]

        # pairs: new intra edges, and the rule over the new inter edges with all intra edges
        new_intra = new[intra_a]
        p = transitive_pairs(n, intra_a[new_intra], intra_b[new_intra], inter_a, inter_b,
                             intra_for_neighbours=(intra_a, intra_b))
        generated = len(p)
        key = pair_key(p.anchor, p.positive, n)
        old_key = pair_key(np.searchsorted(node, graph.pair_anchor),
                           np.searchsorted(node, graph.pair_positive), n)
        p = p.take(~np.isin(key, old_key))
        existing = len(p)
        pair_cluster = np.full(len(p), -1, np.int64)
        from_inter = p.kind != INTRA
        pair_cluster[from_inter] = inter_cluster[p.edge[from_inter]]
        # pairs each cluster already has (graph.edge_id is sorted)
        used_of = graph.edge_cluster[np.searchsorted(graph.edge_id, graph.pair_edge)] \
            if len(graph.pair_edge) else np.zeros(0, np.int64)
        used = np.bincount(used_of[used_of >= 0], minlength=int(fine.max()) + 1)
        priority = hash_priority(pair_hash(crop_key[p.anchor], crop_key[p.positive]), cfg.seed)
        p = p.take(cap_per_cluster(pair_cluster, priority, cfg.max_pairs_per_cluster, used))
        capped = existing - len(p)
        keep, is_val = split_by_video(video, p.anchor, p.positive, cfg.val_fraction, cfg.seed)
        p, is_val = p.take(keep), is_val[keep]
        t_pairs = time.perf_counter() - t0 - t_read - t_cluster

        _write(store, run_id, rebuild, node[new], coarse[new], fine[new],
               node[intra_a[new_intra]], node[intra_b[new_intra]],
               node[inter_a], node[inter_b], inter_w, inter_cluster,
               node[p.anchor], node[p.positive], p.kind, p.edge, is_val)
        summary |= {
            "run_id": run_id, "clusters": len(np.unique(fine)),
            "new_intra_edges": int(new_intra.sum()), "new_inter_edges": len(inter_a),
            "new_pairs": {name: int((p.kind == code).sum()) for code, name in enumerate(PAIR_KINDS)},
            "new_pairs_train": int((~is_val).sum()), "new_pairs_val": int(is_val.sum()),
            "dropped_pairs": {"already_in_graph": generated - existing, "cluster_cap": capped,
                              "across_splits": int((~keep).sum())},
            "embedding_sets": emb.set_ids, "embedding_model": emb.model,
            "seconds": {"read": round(t_read, 3), "cluster": round(t_cluster, 3),
                        "pairs": round(t_pairs, 3),
                        "total": round(time.perf_counter() - t0, 3)}}
        run.summary = summary
    return summary


def _write(store: Store, run_id: int, rebuild: bool, node, coarse, fine,
           intra_src, intra_dst, inter_src, inter_dst, inter_weight, inter_cluster,
           anchor, positive, kind, edge_pos, is_val) -> None:
    """One transaction: (drop the old graph,) clusters, edges, then pairs pointing at them."""
    index = store.index
    with index.write() as conn:
        if rebuild:
            for table in (pairs, edges, clusters):
                conn.execute(delete(table).where(graph_rows(table)))
        index.insert_columns(conn, clusters, {"run_id": np.full(len(node), run_id),
                                              "crop_id": node, "coarse": coarse, "fine": fine})
        n_intra = len(intra_src)
        index.insert_columns(conn, edges, {
            "run_id": np.full(n_intra + len(inter_src), run_id),
            "src": np.concatenate([intra_src, inter_src]),
            "dst": np.concatenate([intra_dst, inter_dst]),
            "kind": [EDGE_KINDS[0]] * n_intra + [EDGE_KINDS[1]] * len(inter_src),
            "weight": np.concatenate([np.ones(n_intra), inter_weight]).astype(float),
            "cluster": [None] * n_intra + np.asarray(inter_cluster).tolist()})
        # ids of the edges just written, matched by (kind, src, dst): unique within a run
        back = index.read_columns(conn, select(edges.c.id, edges.c.src, edges.c.dst, edges.c.kind)
                                  .where(edges.c.run_id == run_id), dtypes=dict(
                                      id=np.int64, src=np.int64, dst=np.int64, kind=object))
        wrote_kind = np.r_[np.zeros(n_intra, np.int64), np.ones(len(inter_src), np.int64)]
        wrote_src = np.concatenate([intra_src, inter_src])
        wrote_dst = np.concatenate([intra_dst, inter_dst])
        mine = np.lexsort((wrote_dst, wrote_src, wrote_kind))
        theirs = np.lexsort((back["dst"], back["src"], (back["kind"] == "inter").astype(np.int64)))
        edge_id = np.empty(len(mine), np.int64)
        edge_id[mine] = back["id"][theirs]
        pair_edge = np.where(kind == INTRA, edge_pos, edge_pos + n_intra)
        index.insert_columns(conn, pairs, {
            "run_id": np.full(len(anchor), run_id), "anchor": anchor, "positive": positive,
            "kind": np.asarray(PAIR_KINDS, dtype=object)[kind].tolist(),
            "split": np.where(is_val, "val", "train").tolist(),
            "edge_id": edge_id[pair_edge] if len(pair_edge) else pair_edge})

