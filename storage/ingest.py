"""Committing a mined video under the consistency rule: bytes first, then rows, then done.

The crop bytes go to the worker's LMDB shard in one durable transaction; only then do the
track and crop rows go to SQL, in the same transaction that marks the video ``done`` and
checks the worker still holds its lease. A crash before the SQL commit leaves orphan bytes
(invisible; ``verify --repair`` deletes them) and a claimed video whose lease will expire,
so it is mined again from scratch. Nothing ever points at bytes that are not there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, update

from .cropstore import ShardWriter
from .db import Index
from .errors import StorageError
from .schema import crops, tracks, videos


class LeaseLost(StorageError):
    """The worker's lease on a video expired and another worker may own it now."""


@dataclass
class CropRecord:
    frame_index: int
    box: tuple[int, int, int, int]          # x0, y0, x1, y1 in source-frame pixels
    data: bytes                             # encoded image
    width: int
    height: int
    pts: float | None = None                # seconds
    quality: float | None = None


@dataclass
class TrackRecord:
    crops: list[CropRecord]
    proposer: str = "motion"
    tracker: str = "kcf"
    score: float | None = None

    @property
    def start_frame(self) -> int:
        return min(c.frame_index for c in self.crops)

    @property
    def end_frame(self) -> int:
        return max(c.frame_index for c in self.crops)


@dataclass
class VideoResult:
    tracks: list[TrackRecord] = field(default_factory=list)
    frames: list[CropRecord] = field(default_factory=list)   # downscaled full frames
    meta: dict[str, Any] = field(default_factory=dict)       # fps, n_frames, width, ...


def crop_key(video_id: int, kind: str, group: int, frame_index: int) -> str:
    return f"v{video_id}/{kind}{group}/f{frame_index}"


def commit_video(index: Index, writer: ShardWriter, video_id: int, owner: str,
                 result: VideoResult) -> tuple[int, int]:
    """Store one mined video. Returns (tracks, crops) committed. Raises LeaseLost."""
    items: list[tuple[str, bytes]] = []
    for t, track in enumerate(result.tracks):
        items += [(crop_key(video_id, "t", t, c.frame_index), c.data) for c in track.crops]
    items += [(crop_key(video_id, "frame", 0, c.frame_index), c.data) for c in result.frames]
    writer.put_many(items)  # durable before any row can point at it

    def crop_row(c: CropRecord, key: str, kind: str, track_id: int | None) -> dict:
        x0, y0, x1, y1 = (int(v) for v in c.box)
        return dict(video_id=video_id, track_id=track_id, kind=kind, frame_index=c.frame_index,
                    pts=c.pts, x0=x0, y0=y0, x1=x1, y1=y1, width=c.width, height=c.height,
                    quality=c.quality, shard=writer.name, key=key)

    with index.write() as conn:
        owned = conn.execute(update(videos).where(
            (videos.c.id == video_id) & (videos.c.lease_owner == owner)
            & (videos.c.status == "claimed")).values(
                status="done", error=None, lease_owner=None, lease_expires=None,
                updated_at=time.time(), **result.meta))
        if owned.rowcount != 1:
            raise LeaseLost(f"lost the lease on video {video_id}; its crops were not recorded")
        # Re-mining a video replaces its rows (edges and pairs on them cascade away).
        conn.execute(delete(crops).where(crops.c.video_id == video_id))
        conn.execute(delete(tracks).where(tracks.c.video_id == video_id))
        track_ids = index.insert_rows(conn, tracks, [
            dict(video_id=video_id, start_frame=t.start_frame, end_frame=t.end_frame,
                 n_crops=len(t.crops), proposer=t.proposer, tracker=t.tracker, score=t.score)
            for t in result.tracks], returning_id=True)
        rows = [crop_row(c, crop_key(video_id, "t", t, c.frame_index), "object", track_ids[t])
                for t, track in enumerate(result.tracks) for c in track.crops]
        rows += [crop_row(c, crop_key(video_id, "frame", 0, c.frame_index), "frame", None)
                 for c in result.frames]
        if rows:
            conn.execute(crops.insert(), rows)
    return len(result.tracks), len(rows)
