"""Finding videos: scan a folder recursively, wait until files stop growing, hash contents.

A file still being copied must never be mined: a path is *stable* once its size and mtime
have stayed the same for ``stable_s`` seconds. The content hash lets a copy of a video that
is already mined (or being mined) be skipped instead of mined twice.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update

from vidmine.storage.db import Index
from vidmine.storage.schema import videos

from .config import VIDEO_EXTENSIONS

HASH_CHUNK = 1 << 20


def scan(root: str | Path) -> list[Path]:
    """Video files under ``root`` (by extension, case-insensitive), sorted, as absolute paths
    (a symlink keeps its own name; copies of one content are caught by the content hash)."""
    root = Path(root).absolute()
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(Path(dirpath, name))
    return sorted(set(found))


@dataclass
class StabilityWatch:
    """Remembers (size, mtime) per path across scans; a path is ready once unchanged for
    ``stable_s`` seconds. Files older than ``stable_s`` at first sight are ready at once."""
    stable_s: float
    _seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)

    def ready(self, paths: list[Path]) -> list[Path]:
        now = time.time()
        out = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                self._seen.pop(path, None)
                continue
            sig = (st.st_size, st.st_mtime)
            prev = self._seen.get(path)
            if prev is None or prev[:2] != sig:
                since = st.st_mtime if now - st.st_mtime >= self.stable_s else now
                self._seen[path] = (*sig, since)
                prev = self._seen[path]
            if now - prev[2] >= self.stable_s:
                out.append(path)
        return out


def register(index: Index, paths: list[Path]) -> int:
    """Add stable files to the index as pending (known paths are left alone)."""
    records = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        records.append({"path": str(path), "size": st.st_size, "mtime": st.st_mtime})
    return index.add_videos(records)


def content_hash(path: str | Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def duplicate_of(index: Index, video_id: int, digest: str) -> str | None:
    """Record the video's hash; return the path of another video with the same content that
    is done or being mined (so this one is skipped), else None."""
    with index.write() as conn:
        conn.execute(update(videos).where(videos.c.id == video_id).values(content_hash=digest))
        other = conn.execute(select(videos.c.path).where(
            (videos.c.content_hash == digest) & (videos.c.id != video_id)
            & (videos.c.status.in_(("done", "claimed")))).order_by(videos.c.id).limit(1)).first()
    return other[0] if other else None
