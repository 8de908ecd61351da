"""Upkeep of sealed shards: merge many into one, relocate them to another disk.

Only sealed shards move: LMDB is written on a local disk by one worker, and a sealed shard
is an ordinary read-only file that can be copied or served anywhere.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import lmdb
from sqlalchemy import select, update

from vidmine.errors import UsageError

from .cropstore import SEALED_MARK, ShardWriter, is_sealed, new_shard_name, shard_names
from .schema import crops, shards
from .store import Store


def _sealed(store: Store, names: list[str] | None) -> list[str]:
    on_disk = shard_names(store.shards_dir)
    names = names or [n for n in on_disk if is_sealed(store.shards_dir / n)]
    for name in names:
        if name not in on_disk:
            raise UsageError(f"no shard named {name} in {store.shards_dir}")
        if not is_sealed(store.shards_dir / name):
            raise UsageError(f"shard {name} is not sealed (its writer may be running)")
    return names


def merge_shards(store: Store, names: list[str] | None = None, into: str | None = None) -> dict:
    """Copy the crops that rows point at from sealed shards into one new sealed shard, repoint
    the rows in one transaction, then delete the old shards. Orphan bytes are left behind."""
    names = _sealed(store, names)
    if len(names) < 2:
        raise UsageError("merge needs at least two sealed shards")
    writer = ShardWriter(store.shards_dir, into or new_shard_name("merged"))
    store.index.register_shard(writer.name)
    moved = 0
    for name in names:
        with store.index.read() as conn:
            keys = list(conn.execute(select(crops.c.key).where(crops.c.shard == name)).scalars())
        for lo in range(0, len(keys), 2000):
            batch = keys[lo:lo + 2000]
            writer.put_many(list(zip(batch, store.reader.get_many([(name, k) for k in batch]))))
        moved += len(keys)
    info = writer.seal()
    if info["n_items"] != moved:
        raise UsageError(f"merge found duplicate keys across {names}; nothing was changed")
    with store.index.write() as conn:
        conn.execute(update(crops).where(crops.c.shard.in_(names)).values(shard=writer.name))
        conn.execute(update(shards).where(shards.c.name == writer.name).values(
            status="sealed", n_items=info["n_items"], n_bytes=info["n_bytes"]))
        conn.execute(shards.delete().where(shards.c.name.in_(names)))
    store.reader.close()
    for name in names:
        shutil.rmtree(store.shards_dir / name)
    return {"merged": names, "into": writer.name, "crops": moved}


def relocate_shards(store: Store, dest: str | Path, move: bool = False,
                    names: list[str] | None = None) -> dict:
    """Copy sealed shards (compacted, consistent snapshots) to ``dest``; with ``move`` the
    originals are deleted after each copy checks out. Point ``shards_dir`` at ``dest`` after."""
    dest = Path(dest).expanduser().resolve()
    if dest == store.shards_dir:
        raise UsageError("destination is the store's own shard directory")
    names = _sealed(store, names)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = store.shards_dir / name
        target = dest / name
        target.mkdir(exist_ok=True)
        env = store.reader.environment(name)
        env.copy(str(target), compact=True)
        entries = env.stat()["entries"]
        shutil.copy2(src / SEALED_MARK, target / SEALED_MARK)
        copy = lmdb.open(str(target), readonly=True, lock=False, subdir=True)
        try:
            if copy.stat()["entries"] != entries:
                raise UsageError(f"copy of shard {name} is incomplete; original kept")
        finally:
            copy.close()
        if move:
            store.reader.close()
            shutil.rmtree(src)
    return {"relocated": names, "to": str(dest), "moved": move}
