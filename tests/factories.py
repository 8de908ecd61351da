"""Real crops for tests of graph, training and evaluation, without running the miner.

Each *track* is one object instance: a patch cut from a photo (or a procedural texture when
the sample data is absent) seen under changing scale, rotation, shift and brightness, as a
tracked object changes viewpoint. Crops are real JPEGs committed through storage.ingest.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vidmine.images import encode_image
from vidmine.storage.ingest import CropRecord, TrackRecord, VideoResult, commit_video
from vidmine.storage.store import Store


def textures(images_dir: Path | None, n: int, rng: np.random.Generator, size: int = 160) -> list[np.ndarray]:
    """``n`` distinct RGB patches: cut from the photos when present, else procedural."""
    out = []
    photos = sorted(images_dir.glob("*.jpg")) if images_dir and images_dir.is_dir() else []
    for i in range(n):
        if photos:
            img = cv2.cvtColor(cv2.imread(str(photos[i % len(photos)])), cv2.COLOR_BGR2RGB)
            h, w = img.shape[:2]
            y, x = rng.integers(0, max(1, h - size)), rng.integers(0, max(1, w - size))
            patch = img[y:y + size, x:x + size]
            patch = cv2.resize(patch, (size, size))
        else:
            yy, xx = np.mgrid[0:size, 0:size] / size
            f1, f2, ph = rng.uniform(2, 12), rng.uniform(2, 12), rng.uniform(0, 6.3)
            base = rng.integers(0, 255, 3)
            wave = (np.sin(2 * np.pi * (f1 * xx + f2 * yy) + ph) + 1) / 2
            patch = (wave[..., None] * base[None, None, :]
                     + (1 - wave[..., None]) * rng.integers(0, 255, 3)).astype(np.uint8)
        out.append(np.ascontiguousarray(patch))
    return out


def view(patch: np.ndarray, t: float, rng: np.random.Generator, out: int = 64) -> np.ndarray:
    """The patch at time ``t`` in [0, 1] of its track: a smooth viewpoint-like change."""
    size = patch.shape[0]
    angle = 25 * t + rng.normal(0, 2)
    scale = 1.0 + 0.25 * t
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += rng.normal(0, 3, 2)
    img = cv2.warpAffine(patch, m, (size, size), borderMode=cv2.BORDER_REFLECT)
    img = np.clip(img.astype(np.float32) * (0.85 + 0.3 * t), 0, 255).astype(np.uint8)
    return cv2.resize(img, (out, out), interpolation=cv2.INTER_AREA)


def fill_store(store: Store, n_videos: int = 3, tracks_per_video: int = 3, crops_per_track: int = 4,
               seed: int = 0, images_dir: Path | None = None, frames_per_video: int = 0,
               crop_size: int = 64, commit_order: list[int] | None = None) -> dict:
    """Commit ``n_videos`` videos of synthetic tracks (in ``commit_order`` of the videos, as
    workers finishing in another order would). Returns ground truth:
    ``{"instance": {crop_id: instance}, "video": {crop_id: video_id}}`` where an instance is
    one patch; tracks in different videos may show the same patch (``instance`` tells)."""
    rng = np.random.default_rng(seed)
    n_instances = max(tracks_per_video, n_videos * tracks_per_video // 2)
    patches = textures(images_dir, n_instances, rng)
    store.index.add_videos([{"path": f"/synthetic/seed{seed}/video{v}.mp4", "size": 1}
                            for v in range(n_videos)])
    writer = store.new_writer("test")
    truth_instance: dict[int, int] = {}
    owner = f"factory-{seed}"
    from sqlalchemy import select

    from vidmine.storage.schema import crops, videos
    made = []
    for _ in range(n_videos):
        video = store.index.claim_video(owner, lease_s=600)
        instances = rng.choice(n_instances, size=tracks_per_video, replace=False)
        result = VideoResult(meta={"fps": 25.0, "n_frames": 100, "width": 320, "height": 240})
        for inst in instances:
            start = int(rng.integers(0, 20))
            recs = []
            for k in range(crops_per_track):
                img = view(patches[inst], k / max(1, crops_per_track - 1), rng, crop_size)
                recs.append(CropRecord(frame_index=start + 5 * k, box=(10, 10, 74, 74),
                                       data=encode_image(img), width=crop_size,
                                       height=crop_size, pts=(start + 5 * k) / 25.0))
            result.tracks.append(TrackRecord(crops=recs, score=float(inst)))
        for f in range(frames_per_video):
            frame = cv2.resize(patches[instances[0]], (96, 72))
            result.frames.append(CropRecord(frame_index=10 * f, box=(0, 0, 320, 240),
                                            data=encode_image(frame), width=96, height=72,
                                            pts=10 * f / 25.0))
        made.append((video, instances, result))
    for video, instances, result in (made if commit_order is None else
                                     [made[i] for i in commit_order]):
        commit_video(store.index, writer, video["id"], owner, result)
        with store.index.read() as conn:
            rows = conn.execute(select(crops.c.id, crops.c.track_id).where(
                (crops.c.video_id == video["id"]) & (crops.c.kind == "object"))
                .order_by(crops.c.track_id, crops.c.frame_index)).all()
        track_order = sorted({tid for _, tid in rows})
        for crop_id, tid in rows:
            truth_instance[crop_id] = int(instances[track_order.index(tid)])
    store.seal(writer)
    with store.index.read() as conn:
        video_of = dict(conn.execute(select(crops.c.id, crops.c.video_id)).all())
        assert conn.execute(select(videos.c.id).where(videos.c.status != "done")).first() is None
    return {"instance": truth_instance, "video": video_of}
