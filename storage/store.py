"""The work directory: where the SQL index and the crop shards of one vidmine store live.

    <workdir>/index.sqlite     the SQL index (unless --db / VIDMINE_DB names PostgreSQL)
    <workdir>/shards/<name>/   one LMDB environment per writing worker
    <workdir>/embeddings/      feature matrices of embedding runs (.npz)
    <workdir>/reports/         contact sheets, galleries, evaluation reports
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select

from vidmine.config import validate
from vidmine.images import decode_image
from vidmine.text import safe_name

from .cropstore import CropReader, ShardWriter, new_shard_name
from .db import Index, in_batches, sqlite_url
from .errors import StorageError
from .schema import crops


@dataclass
class StorageConfig:
    workdir: str = field(default="./vidmine-data",
                         metadata={"help": "work directory holding the index and the shards"})
    db: str | None = field(default=None, metadata={
        "help": "database URL (default: SQLite in the workdir; env VIDMINE_DB)"})
    shards_dir: str | None = field(default=None, metadata={
        "help": "where crop shards live (default: <workdir>/shards; must be a local disk)"})
    jpeg_quality: int = field(default=90, metadata={
        "min": 1, "max": 100, "help": "JPEG quality of stored crops"})
    initial_map_mb: int = field(default=64, metadata={
        "above": 0, "help": "initial LMDB map size per shard"})
    max_map_gb: int = field(default=1024, metadata={
        "above": 0, "help": "largest LMDB map size per shard"})
    busy_timeout_s: float = field(default=60.0, metadata={
        "above": 0, "help": "SQLite busy timeout"})

    def __post_init__(self):
        validate(self)


class BadCrops:
    """Crops a job could not read or decode: each is named once on stderr and skipped; past
    ``limit`` (1 %) of the ``total`` crops the job reads, it fails with one line."""

    def __init__(self, job: str, total: int, limit: float = 0.01):
        self.job, self.total, self.limit = job, total, limit
        self.bad: dict[int, str] = {}

    def add(self, crop_id: int, reason: str) -> None:
        if crop_id in self.bad:
            return
        self.bad[crop_id] = reason
        print(f"{self.job}: warning: skipped crop {crop_id}: {safe_name(reason)}",
              file=sys.stderr)
        if len(self.bad) > self.limit * self.total:
            raise StorageError(f"{len(self.bad)} of {self.total} crops cannot be read or "
                               f"decoded (more than {self.limit:.0%}, e.g. crop {crop_id}); "
                               "run `vidmine-store verify --repair`, then mine again")


class Store:
    """An opened work directory: ``store.index`` (SQL) and ``store.reader`` (crop bytes)."""

    def __init__(self, cfg: StorageConfig, *, create: bool = True, migrate: bool = True):
        self.cfg = cfg
        self.root = Path(cfg.workdir).expanduser().resolve()
        if not create and not self.root.is_dir():
            raise StorageError(f"no vidmine work directory at {self.root} "
                               "(mine some videos first, or pass --workdir)")
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create work directory {self.root}: {exc.strerror}") from exc
        explicit = cfg.db or os.environ.get("VIDMINE_DB")
        url = explicit or sqlite_url(self.root / "index.sqlite")
        if not create and not explicit and not (self.root / "index.sqlite").is_file():
            raise StorageError(f"no vidmine index in {self.root} (mine some videos first)")
        # A store on a read-only mount (or without write permission) opens read-only: status,
        # stats, show, export and eval work; anything that writes fails with one line.
        self.read_only = not explicit and self.root.is_dir() and not os.access(self.root, os.W_OK)
        self.index = Index(url, busy_timeout_s=cfg.busy_timeout_s, migrate=migrate,
                           read_only=self.read_only)
        self.shards_dir = Path(cfg.shards_dir).expanduser().resolve() if cfg.shards_dir \
            else self.root / "shards"
        self.reader = CropReader(self.shards_dir)

    def subdir(self, name: str) -> Path:
        path = self.root / name
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write in {path}: {exc.strerror}"
                               + (" (a read-only store: pass --out DIR)" if self.read_only
                                  else "")) from exc
        return path

    def new_writer(self, prefix: str = "w") -> ShardWriter:
        """A fresh shard for this process, registered as open in the index."""
        writer = ShardWriter(self.shards_dir, new_shard_name(prefix),
                             initial_map_size=self.cfg.initial_map_mb << 20,
                             max_map_size=self.cfg.max_map_gb << 30)
        self.index.register_shard(writer.name)
        return writer

    def load_crops(self, crop_ids: Sequence[int], job: str = "vidmine") -> dict[int, np.ndarray]:
        """Decoded RGB images of the given crops, by id (one read transaction per shard).
        A crop that cannot be read or decoded is left out, named in a warning; more than
        1 % of them fails with one line (:class:`BadCrops`)."""
        ids = sorted({int(i) for i in crop_ids})
        refs = []
        with self.index.read() as conn:
            for batch in in_batches(ids):
                refs += conn.execute(select(crops.c.id, crops.c.shard, crops.c.key)
                                     .where(crops.c.id.in_(batch))).all()
        blobs = self.reader.get_many([(shard, key) for _, shard, key in refs], missing_ok=True)
        guard = BadCrops(job, total=len(refs))
        out = {}
        for (crop_id, _, _), blob in zip(refs, blobs):
            if blob is None:
                guard.add(crop_id, "bytes missing or on a damaged page")
                continue
            try:
                out[crop_id] = decode_image(blob)
            except ValueError as exc:
                guard.add(crop_id, str(exc))
        return out

    def seal(self, writer: ShardWriter) -> None:
        info = writer.seal()
        self.index.seal_shard(writer.name, info["n_items"], info["n_bytes"])

    def close(self) -> None:
        self.reader.close()
        self.index.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

