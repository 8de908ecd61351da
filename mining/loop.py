"""One claimed video, from its claim to its commit: the mining loop every executor shares.

The local worker processes, the daemon (the same workers, watching) and the Ray driver all
run a video the same way:

1. :func:`skip_duplicate`: hash the file; a copy of a video already done or being mined is
   ended as skipped.
2. mine it (``pipeline.mine_video``; in this process, or in a Ray task), while a
   :class:`Heartbeat` renews the lease.
3. :func:`settle`: commit the result under the consistency rule (bytes, then rows, then
   done), or end the video as failed / give it back, and return one event.

:class:`RunSummary` tallies the events. Only scheduling differs between executors.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from vidmine.storage.db import file_path
from vidmine.storage.errors import DatabaseError, StorageError, StoreFullError
from vidmine.storage.ingest import LeaseLost, VideoResult, commit_video
from vidmine.storage.store import Store

from .config import MiningConfig
from .decode import MiningStopped, VideoRejected
from .discover import content_hash, duplicate_of
from .pipeline import MiningStats, mine_video

PROGRESS_EVERY = 200  # decoded frames between progress events


def owner_name() -> str:
    """Lease owner: host and pid (so a person can find the process), plus a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Heartbeat(threading.Thread):
    """Renews the lease on one video until stopped; notes when the lease was lost."""

    def __init__(self, store: Store, video_id: int, owner: str, cfg: MiningConfig):
        super().__init__(daemon=True)
        self.store, self.video_id, self.owner, self.cfg = store, video_id, owner, cfg
        self.done = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.done.wait(self.cfg.heartbeat_s):
            try:
                if not self.store.index.renew_lease(self.video_id, self.owner, self.cfg.lease_s):
                    self.lost = True
                    return
            except StorageError:
                pass  # a database hiccup: try again at the next beat; the lease has slack

    def stop(self) -> None:
        self.done.set()


def _event(video: dict, status: str, **extra) -> dict:
    return {"video_id": video["id"], "path": video["path"], "status": status, "tracks": 0,
            "crops": 0, "frames": 0, **extra}


def skip_duplicate(store: Store, video: dict, owner: str) -> dict | None:
    """Record the video's content hash; if another video with that content is done or being
    mined, end this one as skipped and return its event. Unreadable files are rejected."""
    try:
        digest = content_hash(file_path(video))
    except OSError as exc:
        raise VideoRejected(f"cannot read file: {exc.strerror}") from exc
    other = duplicate_of(store.index, video["id"], digest)
    if other is None:
        return None
    reason = f"same content as {other}"
    store.index.release_video(video["id"], owner, "skipped", error=reason)
    return _event(video, "skipped", reason=reason)


def settle(store: Store, writer_box: list, video: dict, owner: str, run_id: int | None,
           outcome: VideoResult | BaseException, frames: int = 0, started: float | None = None) -> dict:
    """End one claimed video by its outcome and return the event: a result is committed
    (``writer_box[0]``, the executor's shard writer, is opened on first use); a rejection or
    the time limit fails the video with its reason; a stop gives it back; any other error
    fails this video only. A full disk or a lost database raises: no other video can go on."""
    vid = video["id"]
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        outcome.meta["run_id"] = run_id
        if writer_box[0] is None:
            writer_box[0] = store.new_writer("mine")
        tracks, _ = commit_video(store.index, writer_box[0], vid, owner, outcome)
        return _event(video, "done", tracks=tracks,
                      crops=sum(len(t.crops) for t in outcome.tracks), frames=frames,
                      seconds=time.time() - started if started else None)
    except VideoRejected as exc:
        store.index.release_video(vid, owner, "failed", error=str(exc))
        return _event(video, "failed", reason=str(exc))
    except MiningStopped as exc:
        reason = str(exc)
        if reason.startswith("timed out"):
            store.index.release_video(vid, owner, "failed", error=reason)
            return _event(video, "failed", reason=reason)
        if reason != "lease lost":
            store.index.release_video(vid, owner, "pending")
        return _event(video, "released", reason=reason)
    except LeaseLost as exc:
        return _event(video, "released", reason=str(exc))
    except (StoreFullError, DatabaseError):
        raise
    except Exception as exc:  # an unexpected error on one file must not stop the others
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
        store.index.release_video(vid, owner, "failed", error=reason)
        return _event(video, "failed", reason=reason)


def mine_one(store: Store, writer_box: list, video: dict, owner: str, cfg: MiningConfig,
             run_id: int | None, stop_reason: Callable[[], str | None],
             on_frames: Callable[[int], None] | None = None) -> dict:
    """Mine and settle one claimed video in this process. Returns its event."""
    started = time.time()
    beat = Heartbeat(store, video["id"], owner, cfg)
    beat.start()
    frames_seen = [0]

    def should_stop() -> str | None:
        frames_seen[0] += 1
        if on_frames is not None and frames_seen[0] % PROGRESS_EVERY == 0:
            on_frames(PROGRESS_EVERY)
        if beat.lost:
            return "lease lost"
        if time.time() - started > cfg.video_timeout_s:
            return f"timed out after {cfg.video_timeout_s:.0f} s (video_timeout_s)"
        return stop_reason()

    stats = MiningStats()
    try:
        try:
            if (skipped := skip_duplicate(store, video, owner)) is not None:
                return skipped
            outcome = mine_video(file_path(video), cfg, store.cfg.jpeg_quality, should_stop, stats)
        except (StoreFullError, DatabaseError):
            raise
        except Exception as exc:
            outcome = exc
        return settle(store, writer_box, video, owner, run_id, outcome, stats.frames_decoded,
                      started)
    finally:
        beat.stop()


@dataclass
class RunSummary:
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)      # path -> reason
    skipped: dict[str, str] = field(default_factory=dict)
    released: int = 0
    tracks: int = 0
    crops: int = 0
    frames: int = 0
    seconds: float = 0.0
    workers_replaced: int = 0
    fatal: str | None = None

    def add(self, event: dict) -> None:
        """Count one settled video (frames reported before it ended are counted already)."""
        status = event["status"]
        if status == "done":
            self.done += 1
            self.tracks += event["tracks"]
            self.crops += event["crops"]
        elif status == "failed":
            self.failed[event["path"]] = event["reason"]
        elif status == "skipped":
            self.skipped[event["path"]] = event["reason"]
        else:
            self.released += 1

    def as_dict(self) -> dict:
        return {"done": self.done, "failed": len(self.failed), "skipped": len(self.skipped),
                "released": self.released, "tracks": self.tracks, "crops": self.crops,
                "frames": self.frames, "seconds": round(self.seconds, 2),
                "frames_per_s": round(self.frames / self.seconds, 1) if self.seconds else 0.0,
                "workers_replaced": self.workers_replaced, "fatal": self.fatal,
                "failures": self.failed, "skips": self.skipped}
