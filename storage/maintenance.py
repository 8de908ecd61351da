"""vidmine-store: maintenance of a store's shards and its consistency.

    vidmine-store verify [--repair] [--json]
    vidmine-store merge [--into NAME] [SHARD ...]      merge sealed shards into one
    vidmine-store relocate DEST_DIR [--move]           copy sealed shards to another disk

Only sealed shards move: LMDB is written on a local disk by one worker, and a sealed shard
is an ordinary read-only file that can be copied or served anywhere.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import lmdb
from sqlalchemy import select, update

from .cliutil import UsageError, add_common_args, open_from_args, print_json, run_main
from .cropstore import SEALED_MARK, ShardWriter, is_sealed, new_shard_name, shard_names
from .schema import crops, shards
from .store import Store
from .verify import verify


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidmine-store", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="rows without bytes, bytes without rows")
    p.add_argument("--repair", action="store_true", help="delete orphans, seal dead shards")
    p = sub.add_parser("merge", help="merge sealed shards into one")
    p.add_argument("shards", nargs="*", help="shard names (default: all sealed shards)")
    p.add_argument("--into", help="name of the new shard")
    p = sub.add_parser("relocate", help="copy sealed shards to another directory")
    p.add_argument("dest")
    p.add_argument("--move", action="store_true", help="delete the originals after copying")
    for p in sub.choices.values():
        add_common_args(p)
        p.add_argument("--json", action="store_true", help="print one JSON object only")
    return parser


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    store = open_from_args(args)
    if args.command == "verify":
        result = verify(store, repair=args.repair).as_dict()
    elif args.command == "merge":
        result = merge_shards(store, args.shards or None, args.into)
    else:
        result = relocate_shards(store, args.dest, args.move)
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0 if result.get("ok", True) else 1


def main(argv: list[str] | None = None) -> int:
    return run_main("vidmine-store", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
