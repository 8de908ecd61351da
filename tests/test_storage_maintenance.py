"""Merging and relocating sealed shards keeps every crop readable through the index."""
from __future__ import annotations

import json

from sqlalchemy import select

from tests.factories import fill_store
from vidmine.storage.cli import main as store_main
from vidmine.storage.schema import crops
from vidmine.storage.store import StorageConfig, Store
from vidmine.storage.verify import verify


def _all_bytes(store: Store) -> dict[int, bytes]:
    with store.index.read() as conn:
        refs = conn.execute(select(crops.c.id, crops.c.shard, crops.c.key)).all()
    return dict(zip([r[0] for r in refs], store.reader.get_many([(s, k) for _, s, k in refs])))


def test_merge_then_relocate(store, tmp_path, capsys):
    fill_store(store, n_videos=2, seed=0)
    fill_store(store, n_videos=2, seed=1)
    before = _all_bytes(store)
    work = ["--workdir", str(store.root), "--db", store.index.url, "--json"]

    assert store_main(["merge", *work]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert len(merged["merged"]) == 2 and merged["crops"] == len(before)
    store.reader.close()
    assert _all_bytes(store) == before
    assert [p.name for p in store.shards_dir.iterdir()] == [merged["into"]]

    dest = tmp_path / "elsewhere"
    assert store_main(["relocate", str(dest), "--move", *work]) == 0
    assert json.loads(capsys.readouterr().out)["relocated"] == [merged["into"]]
    moved = Store(StorageConfig(workdir=str(store.root), db=store.index.url, shards_dir=str(dest)))
    assert _all_bytes(moved) == before
    assert verify(moved).ok and not any(store.shards_dir.iterdir())


def test_maintenance_errors_are_one_line(sqlite_store, capsys):
    fill_store(sqlite_store, n_videos=1)
    assert store_main(["merge", "--workdir", str(sqlite_store.root)]) == 2
    assert "at least two sealed shards" in capsys.readouterr().err
    assert store_main(["merge", "nope", "other", "--workdir", str(sqlite_store.root)]) == 2
    assert "no shard named nope" in capsys.readouterr().err
