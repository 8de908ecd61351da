"""Consistency check between the SQL index and the crop shards, and its repair.

``verify`` reads every crop of every shard it checks (a cursor walk of the shard, each image
decoded at 1/8 scale), so it finds:

* *rows without bytes*: a lost shard or key (never written by vidmine itself: a crop row is
  committed only after its bytes);
* *damaged crops*: bytes that LMDB cannot read (a damaged page: the walk fails, and each
  crop is then looked up on its own) or that are not a decodable image (zeroed bytes);
* *bytes without rows*: the normal residue of a worker killed between its LMDB commit and
  its SQL commit;
* violations of the graph's invariants (no inter edge inside one track, no video in both
  splits of the pairs).

``repair`` copies what can still be read of a damaged shard into a new shard, repoints its
rows, and moves the damaged shard to ``<workdir>/quarantine``; deletes the rows of crops
that are lost or damaged, reports the tracks, edges and pairs that went with them, and
queues their videos for mining again (the next ``vidmine-mine run`` mines them); deletes
orphan bytes and seals shards whose writer died. A shard whose writer is alive is never
touched.
"""
from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field

import lmdb
from sqlalchemy import delete, func, or_, select, union, update
from sqlalchemy.orm import aliased

from vidmine.images import decodable
from vidmine.progress import progress_bar

from .cropstore import SEALED_MARK, ShardWriter, is_sealed, new_shard_name, shard_names, writer_alive
from .db import in_batches
from .errors import StorageError
from .schema import crops, edges, graph_rows, pairs, shards, tracks, videos
from .store import Store


@dataclass
class VerifyReport:
    rows: int = 0
    stored_items: int = 0
    rows_without_bytes: list[tuple[int, str, str]] = field(default_factory=list)
    damaged_crops: list[tuple[int, str, str, str]] = field(default_factory=list)  # + reason
    damaged_shards: dict[str, str] = field(default_factory=dict)  # shard -> LMDB error
    bytes_without_rows: list[tuple[str, str]] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)
    busy_shards: list[str] = field(default_factory=list)       # writer alive: not checked
    dead_shards: list[str] = field(default_factory=list)       # unsealed, writer gone
    repaired_rows: int = 0
    repaired_bytes: int = 0
    removed: dict[str, int] = field(default_factory=dict)      # tracks/edges/pairs deleted
    requeued_videos: int = 0
    quarantined: list[str] = field(default_factory=list)       # shard dirs moved aside
    graph: dict[str, int] = field(default_factory=dict)        # graph invariant -> violations

    @property
    def ok(self) -> bool:
        return not self.rows_without_bytes and not self.bytes_without_rows \
            and not self.damaged_crops and not self.damaged_shards \
            and not any(self.graph.values())

    def as_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "stored_items": self.stored_items,
                "rows_without_bytes": len(self.rows_without_bytes),
                "damaged_crops": len(self.damaged_crops),
                "damaged_shards": self.damaged_shards,
                "bytes_without_rows": len(self.bytes_without_rows),
                "missing_shards": self.missing_shards, "busy_shards": self.busy_shards,
                "dead_shards": self.dead_shards,
                "repaired_rows": self.repaired_rows, "repaired_bytes": self.repaired_bytes,
                "removed": self.removed, "requeued_videos": self.requeued_videos,
                "quarantined": self.quarantined, "graph": self.graph,
                "examples": {"rows_without_bytes": self.rows_without_bytes[:5],
                             "damaged_crops": self.damaged_crops[:20],
                             "bytes_without_rows": self.bytes_without_rows[:5]}}


@dataclass
class _ShardCheck:
    stored: set[str] = field(default_factory=set)
    damaged: dict[str, str] = field(default_factory=dict)      # key -> reason
    error: str | None = None


def _check_shard(env: lmdb.Environment, wanted: dict[str, int], bar) -> _ShardCheck:
    """Walk every item of a shard; when the walk breaks on a damaged page, look up each
    wanted key on its own, so that one bad page costs only the crops on it."""
    check = _ShardCheck()
    try:
        with env.begin(buffers=False) as txn:
            for raw_key, value in txn.cursor():
                key = raw_key.decode()
                check.stored.add(key)
                if key in wanted:
                    bar.update(1)
                    if not decodable(value):
                        check.damaged[key] = "not a decodable image"
        return check
    except lmdb.Error as exc:
        check.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    for key in wanted:
        if key in check.stored:
            continue
        bar.update(1)
        try:
            with env.begin(buffers=False) as txn:
                value = txn.get(key.encode())
        except lmdb.Error:
            check.damaged[key] = "unreadable: damaged LMDB page"
            continue
        if value is not None:
            check.stored.add(key)
            if not decodable(value):
                check.damaged[key] = "not a decodable image"
    return check


def verify(store: Store, repair: bool = False, progress: bool = False) -> VerifyReport:
    if repair and store.read_only:
        raise StorageError(f"{store.root} is read-only: verify it here, repair it where it "
                           "is writable")
    report = VerifyReport()
    with store.index.read() as conn:
        rows = conn.execute(select(crops.c.id, crops.c.shard, crops.c.key)).all()
    report.rows = len(rows)
    rows_by_shard: dict[str, dict[str, int]] = defaultdict(dict)
    for crop_id, shard, key in rows:
        rows_by_shard[shard][key] = crop_id

    on_disk = set(shard_names(store.shards_dir))
    checks: dict[str, _ShardCheck] = {}
    bar = progress_bar(total=len(rows), desc="verify", unit="crop", disable=not progress)
    for shard in sorted(on_disk | set(rows_by_shard)):
        wanted = rows_by_shard.get(shard, {})
        if shard not in on_disk:
            report.missing_shards.append(shard)
            report.rows_without_bytes += [(i, shard, k) for k, i in wanted.items()]
            bar.update(len(wanted))
            continue
        path = store.shards_dir / shard
        if not is_sealed(path):
            if writer_alive(path):
                report.busy_shards.append(shard)
                bar.update(len(wanted))
                continue
            report.dead_shards.append(shard)
        try:
            check = _check_shard(store.reader.environment(shard), wanted, bar)
        except Exception as exc:  # the shard cannot even be opened: every crop in it is lost
            check = _ShardCheck(error=f"cannot open: {str(exc).splitlines()[0][:200]}",
                                damaged={k: "shard cannot be opened" for k in wanted})
        checks[shard] = check
        if check.error:
            report.damaged_shards[shard] = check.error
        report.stored_items += len(check.stored)
        report.damaged_crops += [(i, shard, k, check.damaged[k]) for k, i in wanted.items()
                                 if k in check.damaged]
        report.rows_without_bytes += [(i, shard, k) for k, i in wanted.items()
                                      if k not in check.stored and k not in check.damaged]
        report.bytes_without_rows += [(shard, k) for k in check.stored if k not in wanted]
    bar.close()

    if repair:
        _repair(store, report, rows_by_shard, checks)
    report.graph = graph_checks(store)
    return report


def graph_checks(store: Store) -> dict[str, int]:
    """Violations of the graph's invariants: inter edges inside one track (an inter edge
    joins two instances), and videos with pairs in both the train and the val split."""
    a, b = aliased(crops), aliased(crops)
    with store.index.read() as conn:
        same_track = conn.execute(select(func.count()).select_from(edges)
                                  .join(a, a.c.id == edges.c.src).join(b, b.c.id == edges.c.dst)
                                  .where(graph_rows(edges) & (edges.c.kind == "inter")
                                         & (a.c.track_id == b.c.track_id))).scalar_one()
        video_split = union(*(select(crops.c.video_id, pairs.c.split).join(crops, crops.c.id == end)
                              .where(graph_rows(pairs)) for end in (pairs.c.anchor, pairs.c.positive))
                            ).subquery()
        both = conn.execute(select(func.count()).select_from(
            select(video_split.c.video_id).group_by(video_split.c.video_id)
            .having(func.count() > 1).subquery())).scalar_one()
    return {"inter_edges_within_a_track": int(same_track), "videos_in_both_splits": int(both)}


# -- repair ----------------------------------------------------------------------------------

def _repair(store: Store, report: VerifyReport, rows_by_shard: dict[str, dict[str, int]],
            checks: dict[str, _ShardCheck]) -> None:
    store.reader.close()  # readers of the shards touched here must reopen afterwards
    for shard in sorted(report.damaged_shards):
        _salvage(store, report, shard, rows_by_shard[shard], checks[shard])
    lost = [i for i, _, _ in report.rows_without_bytes] + [i for i, *_ in report.damaged_crops]
    if lost:
        _delete_crops(store, report, lost)
    with store.index.write() as conn:
        conn.execute(update(shards).where(shards.c.name.in_(report.missing_shards))
                     .values(status="lost"))
    by_shard: dict[str, list[str]] = defaultdict(list)
    for shard, key in report.bytes_without_rows:
        by_shard[shard].append(key)
    for _, shard, key, _ in report.damaged_crops:
        if shard not in report.damaged_shards:   # e.g. zeroed bytes in a healthy shard
            by_shard[shard].append(key)
    for shard in sorted((set(by_shard) | set(report.dead_shards)) - set(report.damaged_shards)):
        _clean_shard(store, report, shard, by_shard[shard])


def _salvage(store: Store, report: VerifyReport, shard: str, wanted: dict[str, int],
             check: _ShardCheck) -> None:
    """Copy the readable crops of a damaged shard into a new one, repoint their rows, and
    move the damaged shard aside (to ``<workdir>/quarantine``)."""
    good = [k for k in wanted if k in check.stored and k not in check.damaged]
    if good:
        _copy_crops(store, report, shard, wanted, good)
    with store.index.write() as conn:
        conn.execute(update(shards).where(shards.c.name == shard).values(status="quarantined"))
    store.reader.close()
    target = store.subdir("quarantine") / f"{shard}-{time.strftime('%Y%m%d%H%M%S')}"
    shutil.move(str(store.shards_dir / shard), target)
    report.quarantined.append(str(target))


def _copy_crops(store: Store, report: VerifyReport, shard: str, wanted: dict[str, int],
                good: list[str]) -> None:
    """Copy crops ``good`` of a damaged shard into a new sealed shard and repoint their
    rows (a crop that fails to read now is counted as damaged instead)."""
    old = store.reader.environment(shard)
    writer = ShardWriter(store.shards_dir, new_shard_name("repaired"),
                         initial_map_size=store.cfg.initial_map_mb << 20,
                         max_map_size=store.cfg.max_map_gb << 30)
    store.index.register_shard(writer.name)
    moved = []
    for lo in range(0, len(good), 2000):
        items = []
        with old.begin(buffers=False) as txn:
            for key in good[lo:lo + 2000]:
                try:
                    items.append((key, txn.get(key.encode())))
                except lmdb.Error:   # readable in the check, not now: count it as damaged
                    report.damaged_crops.append((wanted[key], shard, key, "unreadable"))
        writer.put_many(items)
        moved += [k for k, _ in items]
    store.seal(writer)
    with store.index.write() as conn:
        for batch in in_batches(moved):
            conn.execute(update(crops).where((crops.c.shard == shard) & crops.c.key.in_(
                batch)).values(shard=writer.name))


def _delete_crops(store: Store, report: VerifyReport, crop_ids: list[int]) -> None:
    """Delete crop rows (their edges and pairs cascade), the tracks left empty, and queue
    the videos they came from for mining again; count what went."""
    removed = {"crops": 0, "edges": 0, "pairs": 0, "tracks": 0}
    video_ids, track_ids = set(), set()
    with store.index.write() as conn:
        for ids in in_batches(crop_ids):
            removed["edges"] += conn.execute(select(func.count()).select_from(edges).where(
                or_(edges.c.src.in_(ids), edges.c.dst.in_(ids)))).scalar_one()
            removed["pairs"] += conn.execute(select(func.count()).select_from(pairs).where(
                or_(pairs.c.anchor.in_(ids), pairs.c.positive.in_(ids)))).scalar_one()
            for vid, tid in conn.execute(select(crops.c.video_id, crops.c.track_id)
                                         .where(crops.c.id.in_(ids))):
                video_ids.add(vid)
                if tid is not None:
                    track_ids.add(tid)
            removed["crops"] += conn.execute(delete(crops).where(crops.c.id.in_(ids))).rowcount
        still = select(crops.c.id).where(crops.c.track_id == tracks.c.id).exists()
        tids = sorted(track_ids)
        for batch in in_batches(tids):
            removed["tracks"] += conn.execute(delete(tracks).where(
                tracks.c.id.in_(batch) & ~still)).rowcount
        vids = sorted(video_ids)
        for batch in in_batches(vids):
            report.requeued_videos += store.index.requeue(conn, videos.c.id.in_(
                batch) & (videos.c.status == "done"))
    report.repaired_rows = removed.pop("crops")
    report.removed = removed


def _clean_shard(store: Store, report: VerifyReport, shard: str, keys: list[str]) -> None:
    """Delete orphan (or undecodable) bytes from a shard; seal it if its writer died."""
    path = store.shards_dir / shard
    env = lmdb.open(str(path), subdir=True, readahead=False, lock=True)
    try:
        with env.begin(write=True) as txn:
            report.repaired_bytes += sum(txn.delete(k.encode()) for k in keys)
        entries = env.stat()["entries"]
    finally:
        env.close()
    if shard in report.dead_shards:  # its writer died: seal what is left
        with store.index.write() as conn:
            conn.execute(update(shards).where(shards.c.name == shard).values(
                status="sealed", n_items=entries))
        (path / SEALED_MARK).write_text('{"repaired": true}')
