"""Stores for the training tests: real JPEG crops (tests.factories) plus the rows the graph
builder would write (pairs, clusters), inserted here because graph is built separately."""
from __future__ import annotations

import numpy as np
from sqlalchemy import select

from tests.factories import fill_store
from vidmine.storage.schema import clusters, crops, pairs
from vidmine.storage.store import StorageConfig, Store

SMALL = {"image_size": 32, "batch_size": 8, "workers": 0, "warmup_steps": 0, "moco_queue": 64,
         "min_gap": 1, "log_every": 1}


def add_graph_rows(store: Store, truth: dict) -> dict:
    """Intra pairs (two crops of one track), inter and transitive pairs (two crops of one
    instance in different tracks), and a clustering whose fine cluster is the instance."""
    with store.index.read() as conn:
        rows = conn.execute(select(crops.c.id, crops.c.track_id)
                            .where(crops.c.kind == "object").order_by(crops.c.id)).all()
    ids = np.array([r[0] for r in rows])
    track = np.array([r[1] for r in rows])
    inst = np.array([truth["instance"][i] for i in ids])
    i, j = np.triu_indices(len(ids), 1)
    intra = track[i] == track[j]
    inter = (inst[i] == inst[j]) & ~intra
    run = store.index.start_run("graph")
    with store.index.write() as conn:
        for kind, keep in (("intra", intra), ("inter", inter), ("transitive", inter)):
            n = int(keep.sum())
            store.index.insert_columns(conn, pairs, {
                "run_id": np.full(n, run), "anchor": ids[i[keep]], "positive": ids[j[keep]],
                "kind": [kind] * n, "split": ["train"] * n})
        store.index.insert_columns(conn, clusters, {
            "run_id": np.full(len(ids), run), "crop_id": ids, "coarse": np.zeros(len(ids), int),
            "fine": inst})
    return {"run": run, "ids": ids, "track": track, "instance_of_row": inst,
            "n_intra": int(intra.sum()), "n_inter": int(inter.sum())}


def make_store(store: Store, **kw) -> dict:
    truth = fill_store(store, **{"n_videos": 3, "tracks_per_video": 3, "crops_per_track": 4,
                                 "frames_per_video": 4, "crop_size": 48, **kw})
    return {**truth, **add_graph_rows(store, truth)}


def open_train_store(tmp_path):
    """A SQLite store with crops, frames, pairs and clusters; yields (store, truth). Each
    test file wraps it in its own ``train_store`` fixture."""
    s = Store(StorageConfig(workdir=str(tmp_path / "work")))
    truth = make_store(s)
    yield s, truth
    s.close()
