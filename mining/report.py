"""What a person sees of mining: progress bars, the summary table, status, the contact sheet."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from vidmine.progress import progress_bar
from vidmine.sheets import contact_sheet
from vidmine.storage.schema import crops, tracks, videos
from vidmine.storage.store import Store
from vidmine.text import safe_name

from .loop import RunSummary


class Progress:
    """Two bars on stderr: videos finished (of those known) and source frames decoded."""

    def __init__(self, enabled: bool = True):
        self.finished = 0
        self.videos = progress_bar(total=0, desc="videos", unit="video", disable=not enabled,
                                   position=0)
        self.frame_bar = progress_bar(desc="frames", unit="frame", disable=not enabled, position=1)

    def total(self, n: int) -> None:
        if n != self.videos.total:
            self.videos.total = n
            self.videos.refresh()

    def video(self, status: str) -> None:
        self.finished += 1
        self.videos.update(1)
        self.videos.set_postfix_str(status, refresh=False)

    def frames(self, n: int) -> None:
        self.frame_bar.update(n)

    def close(self) -> None:
        self.frame_bar.close()
        self.videos.close()


def summary_table(summary: RunSummary) -> str:
    d = summary.as_dict()
    lines = [
        "mining summary",
        f"  videos done     {d['done']:>8}",
        f"  videos failed   {d['failed']:>8}",
        f"  videos skipped  {d['skipped']:>8}",
        f"  tracks          {d['tracks']:>8}",
        f"  crops           {d['crops']:>8}",
        f"  frames decoded  {d['frames']:>8}",
        f"  frames / s      {d['frames_per_s']:>8}",
        f"  wall time (s)   {d['seconds']:>8}",
    ]
    if summary.workers_replaced:
        lines.append(f"  workers replaced {summary.workers_replaced:>7}")
    for path, reason in sorted(summary.failed.items()):
        lines.append(f"  failed  {safe_name(path)}: {safe_name(reason)}")
    for path, reason in sorted(summary.skipped.items()):
        lines.append(f"  skipped {safe_name(path)}: {safe_name(reason)}")
    return "\n".join(lines)


def status(store: Store) -> dict:
    """Videos by status, tracks, crops, and the failures with their reasons."""
    counts = store.index.video_counts()
    with store.index.read() as conn:
        n_tracks = conn.execute(select(func.count()).select_from(tracks)).scalar_one()
        n_crops = conn.execute(select(func.count()).select_from(crops)
                               .where(crops.c.kind == "object")).scalar_one()
        n_frames = conn.execute(select(func.count()).select_from(crops)
                                .where(crops.c.kind == "frame")).scalar_one()
        failures = conn.execute(select(videos.c.path, videos.c.status, videos.c.error).where(
            videos.c.status.in_(("failed", "skipped"))).order_by(videos.c.path)).all()
        claimed = conn.execute(select(videos.c.path, videos.c.lease_owner).where(
            videos.c.status == "claimed").order_by(videos.c.path)).all()
    return {"videos": counts, "tracks": n_tracks, "crops": n_crops, "frames": n_frames,
            "failures": [{"path": p, "status": s, "reason": e} for p, s, e in failures],
            "in_progress": [{"path": p, "owner": o} for p, o in claimed]}


def status_text(st: dict) -> str:
    v = st["videos"]
    lines = ["videos: " + ", ".join(f"{k} {n}" for k, n in v.items()),
             f"tracks: {st['tracks']}   crops: {st['crops']}   full frames: {st['frames']}"]
    lines += [f"  mining  {safe_name(c['path'])} ({safe_name(c['owner'])})"
              for c in st["in_progress"]]
    lines += [f"  {f['status']:<7} {safe_name(f['path'])}: {safe_name(f['reason'])}"
              for f in st["failures"]]
    return "\n".join(lines)


def track_sheet(store: Store, out_png: str | Path, max_tracks: int = 40,
                video_ids: list[int] | None = None) -> Path | None:
    """Contact sheet of mined tracks, one row per track: its first, middle and last crop.
    Returns None when there is no track to show."""
    with store.index.read() as conn:
        stmt = (select(crops.c.track_id, crops.c.id, videos.c.path)
                .join(videos, videos.c.id == crops.c.video_id)
                .where(crops.c.kind == "object")
                .order_by(crops.c.track_id, crops.c.frame_index))
        if video_ids is not None:
            stmt = stmt.where(crops.c.video_id.in_(video_ids))
        rows = conn.execute(stmt).all()
    by_track: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for track_id, crop_id, path in rows:
        by_track.setdefault(track_id, []).append(crop_id)
        names[track_id] = Path(path).name
    if not by_track:
        return None
    chosen = sorted(by_track)
    if len(chosen) > max_tracks:  # spread the rows over all videos rather than the first few
        step = len(chosen) / max_tracks
        chosen = [chosen[int(i * step)] for i in range(max_tracks)]
    sheet_rows = [[ids[0], ids[len(ids) // 2], ids[-1]] for ids in (by_track[t] for t in chosen)]
    labels = [f"{names[t]} track {t}" for t in chosen]
    return contact_sheet(store, sheet_rows, out_png, labels)
