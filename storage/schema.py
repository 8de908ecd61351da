"""The SQL index: one table per kind of record, as SQLAlchemy Core tables.

Core tables (not ORM classes) because every hot path is bulk: executemany inserts and
column reads straight into numpy. Changing anything here needs a migration in
``storage/migrations/versions`` (tests check that the migrations and this file agree).
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

VIDEO_STATUSES = ("pending", "claimed", "done", "failed", "skipped")
EDGE_KINDS = ("intra", "inter")
# Pairs the graph stores, in order of preference when one pair arises several ways (the most
# direct reason first). Temporal and tracker positives are derived by training at load time.
PAIR_KINDS = ("intra", "inter", "transitive")
CROP_KINDS = ("object", "frame")

runs = Table(
    "runs", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),          # mine | graph | embed | train | eval
    Column("status", String(16), nullable=False, default="running"),
    Column("host", String(255)),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("config", Text),                               # JSON of the config dataclasses
    Column("summary", Text),                              # JSON of the figures at the end
    Column("parent_id", Id, ForeignKey("runs.id")),        # e.g. the train run an embedding used
)

videos = Table(
    "videos", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False, unique=True),     # UTF-8; other bytes as \xNN
    Column("path_bytes", LargeBinary),                    # the raw name when not UTF-8
    Column("size", BigInteger, nullable=False, default=0),
    Column("mtime", Float),
    Column("content_hash", String(64), index=True),
    Column("status", String(16), nullable=False, default="pending", index=True),
    Column("lease_owner", String(255)),
    Column("lease_expires", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("fps", Float),
    Column("n_frames", Integer),
    Column("width", Integer),
    Column("height", Integer),
    Column("duration", Float),
    Column("frames_decoded", Integer),
    Column("run_id", Id, ForeignKey("runs.id")),
    Column("updated_at", Float),
)

shards = Table(
    "shards", metadata,
    Column("name", String(255), primary_key=True),
    Column("host", String(255)),
    Column("status", String(16), nullable=False, default="open"),   # open | sealed | lost | quarantined
    Column("created_at", Float),
    Column("sealed_at", Float),
    Column("n_items", BigInteger, nullable=False, default=0),
    Column("n_bytes", BigInteger, nullable=False, default=0),
)

tracks = Table(
    "tracks", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("video_id", Id, ForeignKey("videos.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("start_frame", Integer, nullable=False),
    Column("end_frame", Integer, nullable=False),
    Column("n_crops", Integer, nullable=False, default=0),
    Column("proposer", String(32)),
    Column("tracker", String(32)),
    Column("score", Float),
)

crops = Table(
    "crops", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("video_id", Id, ForeignKey("videos.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("track_id", Id, ForeignKey("tracks.id", ondelete="CASCADE"), index=True),
    Column("kind", String(8), nullable=False, default="object"),    # object | frame
    Column("frame_index", Integer, nullable=False),
    Column("pts", Float),                                            # seconds
    Column("x0", Integer), Column("y0", Integer), Column("x1", Integer), Column("y1", Integer),
    Column("width", Integer), Column("height", Integer),             # of the stored image
    Column("quality", Float),
    Column("shard", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    UniqueConstraint("shard", "key", name="uq_crops_shard_key"),
)

embedding_sets = Table(
    "embedding_sets", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("runs.id"), nullable=False),
    Column("model", String(255), nullable=False),     # backbone name or "handcrafted"
    Column("checkpoint", Text),
    Column("dim", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("path", Text, nullable=False),             # .npz beside the shards: ids + vectors
    Column("created_at", Float),
)

clusters = Table(
    "clusters", metadata,
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("crop_id", Id, ForeignKey("crops.id", ondelete="CASCADE"), primary_key=True),
    Column("coarse", Integer, nullable=False),
    Column("fine", Integer, nullable=False, index=True),
)

edges = Table(
    "edges", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("src", Id, ForeignKey("crops.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("dst", Id, ForeignKey("crops.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),        # intra | inter
    Column("weight", Float),
    Column("cluster", Integer),                       # fine cluster an inter edge came from
)

pairs = Table(
    "pairs", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("anchor", Id, ForeignKey("crops.id", ondelete="CASCADE"), nullable=False),
    Column("positive", Id, ForeignKey("crops.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("split", String(8), nullable=False, default="train"),
    Column("edge_id", Id, ForeignKey("edges.id", ondelete="CASCADE")),  # the edge that made it
)

Index("ix_pairs_kind_split", pairs.c.kind, pairs.c.split)
Index("ix_crops_track_frame", crops.c.track_id, crops.c.frame_index)


def graph_rows(table: Table) -> ColumnElement[bool]:
    """WHERE clause: the rows of ``clusters``, ``edges`` or ``pairs`` that graph builds wrote,
    which together are the current graph (builds are incremental, one run each)."""
    return table.c.run_id.in_(select(runs.c.id).where(runs.c.kind == "graph").scalar_subquery())
