"""Building the graph on real crops in real databases (SQLite and PostgreSQL)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from sqlalchemy import select

from tests.conftest import SHARED_DATA
from tests.factories import fill_store
from vidmine.errors import UsageError
from vidmine.graph.build import build, load_graph
from vidmine.graph.config import GraphConfig
from vidmine.graph.embed import embed, load_embeddings
from vidmine.graph.inspect import explain
from vidmine.graph.pairs import crop_keys
from vidmine.storage.schema import crops, edges, pairs, runs
from vidmine.storage.store import StorageConfig, Store

IMAGES = SHARED_DATA / "images" if (SHARED_DATA / "images").is_dir() else None


def crop_table(store) -> dict[int, tuple[int, int]]:
    with store.index.read() as conn:
        return {i: (t, v) for i, t, v in conn.execute(
            select(crops.c.id, crops.c.track_id, crops.c.video_id))}


def pair_rows(store) -> list:
    with store.index.read() as conn:
        return conn.execute(select(pairs).order_by(pairs.c.id)).all()


def brute_force_pairs(edge_rows) -> set[tuple[frozenset, str]]:
    """The rule recomputed from the stored edges with plain sets."""
    neighbours = defaultdict(set)
    for e in edge_rows:
        if e.kind == "intra":
            neighbours[e.src].add(e.dst)
            neighbours[e.dst].add(e.src)
    kinds: dict[frozenset, str] = {}
    rank = {"intra": 0, "inter": 1, "transitive": 2}

    def offer(x, y, kind):
        key = frozenset((x, y))
        if key not in kinds or rank[kind] < rank[kinds[key]]:
            kinds[key] = kind

    for e in edge_rows:
        offer(e.src, e.dst, e.kind)
        if e.kind == "inter":
            for b2 in neighbours[e.dst]:
                offer(e.src, b2, "transitive")
            for a2 in neighbours[e.src]:
                offer(a2, e.dst, "transitive")
                for b2 in neighbours[e.dst]:
                    offer(a2, b2, "transitive")
    return set(kinds.items())


@pytest.mark.parametrize("mode", ["first_last", "stride"])
def test_build_stores_exactly_the_rules_pairs_with_provenance(store, mode):
    fill_store(store, n_videos=4, tracks_per_video=3, crops_per_track=4, seed=0, images_dir=IMAGES)
    cfg = GraphConfig(intra_mode=mode, val_fraction=0.0, max_pairs_per_cluster=0, k=4)
    embed(store, cfg, progress=False)
    summary = build(store, cfg)
    assert summary["new_inter_edges"] > 0 and summary["new_pairs"]["transitive"] > 0
    with store.index.read() as conn:
        edge_rows = conn.execute(select(edges)).all()
    stored = pair_rows(store)
    got = {(frozenset((p.anchor, p.positive)), p.kind) for p in stored}
    assert len(got) == len(stored)  # no pair twice
    assert got == brute_force_pairs(edge_rows)

    info = crop_table(store)
    for p in stored:  # explain walks anchor -> positive along real edges
        report = explain(store, str(p.id))
        chain = report["chain"]
        assert chain[0]["src"] == p.anchor and chain[-1]["dst"] == p.positive
        assert all(s["dst"] == t["src"] for s, t in zip(chain, chain[1:]))
        assert p.edge_id in {s["edge"] for s in chain}
        assert [s["kind"] for s in chain].count("inter") == (p.kind != "intra")
        for s in chain:
            same_track = info[s["src"]][0] == info[s["dst"]][0]
            assert same_track == (s["kind"] == "intra")
        assert len(chain) == 1 if p.kind != "transitive" else 2 <= len(chain) <= 3


def test_inter_edges_join_other_tracks_and_videos_and_respect_the_cap(store):
    fill_store(store, n_videos=4, tracks_per_video=3, crops_per_track=4, seed=1, images_dir=IMAGES)
    cfg = GraphConfig(intra_mode="stride", max_inter_per_node=2, k=3)
    embed(store, cfg, progress=False)
    build(store, cfg)
    info = crop_table(store)
    with store.index.read() as conn:
        inter = conn.execute(select(edges.c.src, edges.c.dst).where(edges.c.kind == "inter")).all()
    assert inter
    degree = defaultdict(int)
    for a, b in inter:
        assert info[a][0] != info[b][0] and info[a][1] != info[b][1]
        degree[a] += 1
        degree[b] += 1
    assert max(degree.values()) <= 2


def test_split_by_video_and_cap_per_cluster(store):
    fill_store(store, n_videos=6, tracks_per_video=3, crops_per_track=4, seed=2, images_dir=IMAGES)
    cfg = GraphConfig(intra_mode="stride", val_fraction=0.4, max_pairs_per_cluster=6, k=3)
    embed(store, cfg, progress=False)
    summary = build(store, cfg)
    info = crop_table(store)
    splits = defaultdict(set)
    for p in pair_rows(store):
        splits[p.split] |= {info[p.anchor][1], info[p.positive][1]}
    assert splits["train"] and splits["val"] and not splits["train"] & splits["val"]
    assert summary["dropped_pairs"]["cluster_cap"] > 0
    g = load_graph(store)
    cluster_of_edge = dict(zip(g.edge_id.tolist(), g.edge_cluster.tolist()))
    per_cluster = defaultdict(int)
    for kind, e in zip(g.pair_kind, g.pair_edge.tolist()):
        if kind != "intra":
            per_cluster[cluster_of_edge[e]] += 1
    assert max(per_cluster.values()) <= 6


def test_incremental_build_adds_only_new_pairs_and_rebuild_starts_over(store):
    cfg = GraphConfig(intra_mode="stride", val_fraction=0.0, max_pairs_per_cluster=0, k=3)
    fill_store(store, n_videos=3, tracks_per_video=3, crops_per_track=3, seed=3, images_dir=IMAGES)
    embed(store, cfg, progress=False)
    first = build(store, cfg)
    before = {p.id: p for p in pair_rows(store)}
    old_crops = set(crop_table(store))

    nothing = build(store, cfg)
    assert nothing["new_nodes"] == 0 and sum(nothing["new_pairs"].values()) == 0
    assert {p.id for p in pair_rows(store)} == set(before)

    fill_store(store, n_videos=2, tracks_per_video=3, crops_per_track=3, seed=4, images_dir=IMAGES)
    second = build(store, cfg)  # embeds the 18 new crops first, with the same descriptor
    assert embed(store, cfg, progress=False)["embedded"] == 0
    assert second["new_nodes"] == 18 and first["new_nodes"] == 27
    after = pair_rows(store)
    assert {p.id: p for p in after if p.id in before} == before  # old pairs untouched
    added = [p for p in after if p.id not in before]
    assert len(added) == sum(second["new_pairs"].values()) > 0
    assert all(p.anchor not in old_crops or p.positive not in old_crops for p in added)
    keys = [frozenset((p.anchor, p.positive)) for p in after]
    assert len(keys) == len(set(keys))
    assert any(p.kind != "intra" and (p.anchor in old_crops or p.positive in old_crops)
               for p in added)  # new crops do link to the old graph

    with store.index.read() as conn:
        graph_runs = conn.execute(select(runs.c.id).where(runs.c.kind == "graph")).scalars().all()
    assert len(graph_runs) == 3  # each build is a run

    with pytest.raises(UsageError, match="intra_mode"):
        build(store, GraphConfig(intra_mode="first_last"))
    rebuilt = build(store, GraphConfig(intra_mode="first_last", k=3), rebuild=True)
    assert rebuilt["rebuild"] and rebuilt["new_nodes"] == rebuilt["nodes"] == 2 * 15
    assert {p.run_id for p in pair_rows(store)} == {rebuilt["run_id"]}


def test_a_failed_rebuild_loses_nothing(store):
    cfg = GraphConfig(k=2)
    fill_store(store, n_videos=2, tracks_per_video=2, crops_per_track=3, seed=5, images_dir=IMAGES)
    embed(store, cfg, progress=False)
    build(store, cfg)
    before = pair_rows(store)
    fill_store(store, n_videos=2, tracks_per_video=2, crops_per_track=3, seed=6, images_dir=IMAGES)
    for npz in (store.root / "embeddings").glob("*.npz"):
        npz.unlink()
    with pytest.raises(UsageError, match="embedding file .* is missing"):
        build(store, cfg, rebuild=True)
    assert pair_rows(store) == before


def test_remined_video_drops_its_old_nodes(store):
    cfg = GraphConfig(k=2)
    fill_store(store, n_videos=3, tracks_per_video=2, crops_per_track=3, seed=7, images_dir=IMAGES)
    embed(store, cfg, progress=False)
    build(store, cfg)
    with store.index.write() as conn:  # what re-mining a video does first
        conn.execute(crops.delete().where(crops.c.video_id == 1))
    g = load_graph(store)
    info = crop_table(store)
    assert set(g.node) <= set(info)
    assert set(g.pair_anchor) | set(g.pair_positive) <= set(info)
    assert build(store, cfg)["new_nodes"] == 0


def test_build_without_crops_is_a_clear_error_and_without_embeddings_embeds(store):
    with pytest.raises(UsageError, match="no object crops"):
        build(store, GraphConfig())
    fill_store(store, n_videos=2, tracks_per_video=2, crops_per_track=2, seed=8, images_dir=IMAGES)
    summary = build(store, GraphConfig())   # embeds with the default descriptor first
    emb = load_embeddings(store)
    assert summary["nodes"] == 8 and emb.model == "handcrafted" and len(emb.crop_ids) == 8
    fill_store(store, n_videos=1, tracks_per_video=2, crops_per_track=2, seed=9, images_dir=IMAGES)
    assert build(store, GraphConfig())["new_nodes"] == 4   # new crops are embedded too
    assert len(load_embeddings(store).crop_ids) == 12


def test_mutual_knn_clustering(store):
    fill_store(store, n_videos=4, tracks_per_video=3, crops_per_track=4, seed=9, images_dir=IMAGES)
    cfg = GraphConfig(clustering="mutual_knn", knn_k=3, knn_threshold=0.0, intra_mode="stride")
    embed(store, cfg, progress=False)
    summary = build(store, cfg)
    assert summary["new_inter_edges"] > 0
    g = load_graph(store)
    inter = g.edge_kind == "inter"
    a, b = g.index_of(g.edge_src[inter]), g.index_of(g.edge_dst[inter])
    assert (g.fine[a] == g.fine[b]).all()  # an edge lies inside its component
    # more videos join the existing components or start new ones
    fill_store(store, n_videos=2, tracks_per_video=3, crops_per_track=4, seed=10, images_dir=IMAGES)
    embed(store, cfg, progress=False)
    assert build(store, cfg)["new_nodes"] == 24


def test_two_level_clustering_labels_are_global(store):
    fill_store(store, n_videos=4, tracks_per_video=3, crops_per_track=3, seed=11, images_dir=IMAGES)
    cfg = GraphConfig(clustering="two_level", coarse_k=2, fine_k=3)
    embed(store, cfg, progress=False)
    build(store, cfg)
    g = load_graph(store)
    for fine in np.unique(g.fine):  # each fine cluster lies inside one coarse cluster
        assert len(np.unique(g.coarse[g.fine == fine])) == 1
    assert len(np.unique(g.fine)) > len(np.unique(g.coarse))


@pytest.mark.parametrize("clustering", ["kmeans", "two_level"])
def test_graph_does_not_depend_on_the_order_workers_committed_videos(tmp_path, clustering):
    """Two mining workers interleave the crop ids of their videos differently from run to run;
    the same videos must give the same clusters, edges and pairs (named by video and place
    in the video, not by crop id)."""
    cfg = GraphConfig(clustering=clustering, intra_mode="stride", k=4, coarse_k=2, fine_k=3,
                      max_inter_per_node=2, max_pairs_per_cluster=5, val_fraction=0.3)
    graphs = []
    for name, order in (("in-order", None), ("interleaved", [4, 1, 5, 0, 3, 2])):
        store = Store(StorageConfig(workdir=str(tmp_path / name)))
        fill_store(store, n_videos=6, tracks_per_video=3, crops_per_track=4, seed=3,
                   images_dir=IMAGES, commit_order=order)
        embed(store, cfg, progress=False)
        summary = build(store, cfg)
        info = crop_table(store)
        ids = np.array(sorted(info))
        key = dict(zip(ids.tolist(), crop_keys(np.array([info[i][1] for i in ids]), ids).tolist()))
        g = load_graph(store)
        clusters = {frozenset(key[c] for c in g.node[g.fine == f].tolist()) for f in np.unique(g.fine)}
        inter = {frozenset((key[a], key[b])) for a, b, kind in
                 zip(g.edge_src.tolist(), g.edge_dst.tolist(), g.edge_kind) if kind == "inter"}
        paired = {(frozenset((key[p.anchor], key[p.positive])), p.kind, p.split)
                  for p in pair_rows(store)}
        graphs.append((clusters, inter, paired))
        store.close()
    assert summary["dropped_pairs"]["cluster_cap"] > 0 and graphs[0][1]
    assert graphs[0] == graphs[1]
