"""Consistency check between the SQL index and the crop shards, and its repair.

*Rows without bytes* break the consistency rule (they should never exist; a crop row is
committed only after its bytes). *Bytes without rows* are the normal residue of a worker
killed between its LMDB commit and its SQL commit. ``repair`` deletes both kinds of orphan,
never touching a shard whose writer is still alive. The invariants of the stored graph are
checked too: no inter edge inside one track, no video in both splits of the pairs.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import lmdb
from sqlalchemy import delete, func, select, union, update
from sqlalchemy.orm import aliased

from .cropstore import SEALED_MARK, is_sealed, shard_names, writer_alive
from .schema import crops, edges, graph_rows, pairs, shards
from .store import Store


@dataclass
class VerifyReport:
    rows: int = 0
    stored_items: int = 0
    rows_without_bytes: list[tuple[int, str, str]] = field(default_factory=list)
    bytes_without_rows: list[tuple[str, str]] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)
    busy_shards: list[str] = field(default_factory=list)       # writer alive: not checked
    dead_shards: list[str] = field(default_factory=list)       # unsealed, writer gone
    repaired_rows: int = 0
    repaired_bytes: int = 0
    graph: dict[str, int] = field(default_factory=dict)        # graph invariant -> violations

    @property
    def ok(self) -> bool:
        return not self.rows_without_bytes and not self.bytes_without_rows \
            and not any(self.graph.values())

    def as_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "stored_items": self.stored_items,
                "rows_without_bytes": len(self.rows_without_bytes),
                "bytes_without_rows": len(self.bytes_without_rows),
                "missing_shards": self.missing_shards, "busy_shards": self.busy_shards,
                "dead_shards": self.dead_shards,
                "repaired_rows": self.repaired_rows, "repaired_bytes": self.repaired_bytes,
                "graph": self.graph,
                "examples": {"rows_without_bytes": self.rows_without_bytes[:5],
                             "bytes_without_rows": self.bytes_without_rows[:5]}}


def verify(store: Store, repair: bool = False) -> VerifyReport:
    report = VerifyReport()
    with store.index.read() as conn:
        rows = conn.execute(select(crops.c.id, crops.c.shard, crops.c.key)).all()
    report.rows = len(rows)
    rows_by_shard: dict[str, dict[str, int]] = defaultdict(dict)
    for crop_id, shard, key in rows:
        rows_by_shard[shard][key] = crop_id

    on_disk = set(shard_names(store.shards_dir))
    for shard in sorted(on_disk | set(rows_by_shard)):
        wanted = rows_by_shard.get(shard, {})
        if shard not in on_disk:
            report.missing_shards.append(shard)
            report.rows_without_bytes += [(i, shard, k) for k, i in wanted.items()]
            continue
        path = store.shards_dir / shard
        if not is_sealed(path):
            if writer_alive(path):
                report.busy_shards.append(shard)
                continue
            report.dead_shards.append(shard)
        stored = set(store.reader.keys(shard))
        report.stored_items += len(stored)
        report.rows_without_bytes += [(i, shard, k) for k, i in wanted.items() if k not in stored]
        report.bytes_without_rows += [(shard, k) for k in stored if k not in wanted]

    if repair:
        _repair(store, report)
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


def _repair(store: Store, report: VerifyReport) -> None:
    if report.rows_without_bytes:
        ids = [i for i, _, _ in report.rows_without_bytes]
        with store.index.write() as conn:
            for start in range(0, len(ids), 10_000):
                conn.execute(delete(crops).where(crops.c.id.in_(ids[start:start + 10_000])))
        report.repaired_rows = len(ids)
    by_shard: dict[str, list[str]] = defaultdict(list)
    for shard, key in report.bytes_without_rows:
        by_shard[shard].append(key)
    store.reader.close()  # readers of these shards must reopen after the deletion
    for shard in sorted(set(by_shard) | set(report.dead_shards)):
        path = store.shards_dir / shard
        env = lmdb.open(str(path), subdir=True, readahead=False, lock=True)
        try:
            with env.begin(write=True) as txn:
                report.repaired_bytes += sum(txn.delete(k.encode()) for k in by_shard[shard])
            entries = env.stat()["entries"]
        finally:
            env.close()
        if shard in report.dead_shards:  # its writer died: seal what is left
            with store.index.write() as conn:
                conn.execute(update(shards).where(shards.c.name == shard).values(
                    status="sealed", n_items=entries))
            (path / SEALED_MARK).write_text('{"repaired": true}')
