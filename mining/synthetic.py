"""Synthetic videos with ground truth: textured objects moving, rotating and scaling over a
textured background the camera pans across. Textures come from photos (``../shared/data/
images``) when there are any, else from procedural patterns, so nothing needs the sample data.

``generate_video`` writes one H.264 file with PyAV and returns each object's box per frame;
``track_quality`` scores a mining result against it: precision over the intra-track crop
pairs (both ends on the same object at IoU >= 0.5) and recall over the objects.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from vidmine.storage.ingest import VideoResult

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "images"


@dataclass
class GroundTruth:
    boxes: np.ndarray      # (frames, objects, 4) x0, y0, x1, y1 in pixels; NaN when unseen
    fps: float
    width: int
    height: int

    def to_json(self) -> dict:
        return {"fps": self.fps, "width": self.width, "height": self.height,
                "boxes": np.where(np.isnan(self.boxes), -1, self.boxes).round(1).tolist()}


def _photos(images_dir: Path | None) -> list[Path]:
    folder = images_dir if images_dir is not None else DEFAULT_IMAGES
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def _texture(rng: np.random.Generator, photos: list[Path], h: int, w: int) -> np.ndarray:
    """An RGB texture of size (h, w): a random part of a photo, or a procedural pattern."""
    if photos:
        img = cv2.imread(str(photos[rng.integers(len(photos))]), cv2.IMREAD_COLOR)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        ih, iw = img.shape[:2]
        scale = max(h / ih, w / iw) * rng.uniform(1.0, 1.6)
        img = cv2.resize(img, (int(np.ceil(iw * scale)), int(np.ceil(ih * scale))))
        y = rng.integers(0, img.shape[0] - h + 1)
        x = rng.integers(0, img.shape[1] - w + 1)
        return np.ascontiguousarray(img[y:y + h, x:x + w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(4):  # a few oriented gratings and blobs: texture for flow and trackers
        f = rng.uniform(0.02, 0.15, 2)
        out += (np.sin(xx * f[0] + yy * f[1] + rng.uniform(0, 6.3))[..., None]
                * rng.uniform(-60, 60, 3))
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 2)
    return np.clip(out + noise + rng.uniform(60, 200, 3), 0, 255).astype(np.uint8)


def generate_video(path: str | Path, seed: int = 0, n_objects: int = 2, width: int = 320,
                   height: int = 240, fps: int = 25, seconds: float = 4.0,
                   images_dir: Path | None = None, pan_px: float = 1.5) -> GroundTruth:
    """Write a synthetic video to ``path`` (H.264 in any container PyAV knows by extension)."""
    rng = np.random.default_rng(seed)
    photos = _photos(images_dir)
    n_frames = int(round(seconds * fps))
    pan = rng.uniform(-1, 1, 2)
    pan = pan / (np.linalg.norm(pan) + 1e-9) * pan_px
    margin = int(np.ceil(abs(pan).max() * n_frames)) + 2
    background = _texture(rng, photos, height + 2 * margin, width + 2 * margin)

    objects = []
    lane_w = width / n_objects
    for k in range(n_objects):
        side = int(rng.uniform(0.22, 0.3) * height)
        patch = _texture(rng, photos, side, side)
        mask = np.zeros((side, side), np.float32)
        cv2.ellipse(mask, (side // 2, side // 2), (side // 2 - 1, int(side * rng.uniform(0.42, 0.49))),
                    rng.uniform(0, 180), 0, 360, 1.0, -1)
        objects.append(dict(
            patch=patch.astype(np.float32), mask=mask,
            center=np.array([lane_w * (k + 0.5), rng.uniform(0.35, 0.65) * height]),
            velocity=rng.uniform(1.0, 2.5, 2) * rng.choice([-1, 1], 2),
            spin=rng.uniform(1.0, 3.0) * rng.choice([-1, 1]),
            scale_period=rng.uniform(2.0, 4.0) * fps))

    boxes = np.full((n_frames, n_objects, 4), np.nan, np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart puts the index first, as downloaded videos have it (and truncation then
    # leaves a readable head rather than an unreadable file).
    mp4 = path.suffix.lower() in (".mp4", ".mov", ".m4v")
    with av.open(str(path), mode="w", options={"movflags": "+faststart"} if mp4 else {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for t in range(n_frames):
            ox = int(round(margin + pan[0] * t))
            oy = int(round(margin + pan[1] * t))
            frame = background[oy:oy + height, ox:ox + width].astype(np.float32)
            for k, obj in enumerate(objects):
                # Each object bounces inside its own lane, so objects never overlap.
                lo = np.array([lane_w * k + 42, 42])
                hi = np.array([lane_w * (k + 1) - 42, height - 42])
                c = lo + _bounce(obj["center"] + obj["velocity"] * t, lo, hi)
                side = obj["mask"].shape[0]
                scale = 1.0 + 0.15 * np.sin(2 * np.pi * t / obj["scale_period"])
                m = cv2.getRotationMatrix2D((side / 2, side / 2), obj["spin"] * t, scale)
                m[:, 2] += c - side / 2
                alpha = cv2.warpAffine(obj["mask"], m, (width, height))[..., None]
                fg = cv2.warpAffine(obj["patch"], m, (width, height))
                frame = frame * (1 - alpha) + fg * alpha
                ys, xs = np.nonzero(alpha[..., 0] > 0.5)
                if len(xs):
                    boxes[t, k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            image = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8),
                                               format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return GroundTruth(boxes=boxes, fps=float(fps), width=width, height=height)


def _bounce(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Offset from ``lo`` of a point moving freely, reflected back and forth inside [lo, hi]."""
    span = hi - lo
    return span - np.abs((c - lo) % (2 * span) - span)


def generate_dataset(out_dir: str | Path, n_videos: int = 4, seed: int = 0,
                     images_dir: Path | None = None, **kwargs) -> list[Path]:
    """``n_videos`` synthetic videos in ``out_dir``, each with ``<name>.truth.json`` beside it."""
    out_dir = Path(out_dir)
    paths = []
    for i in range(n_videos):
        path = out_dir / f"synthetic_{seed}_{i:03d}.mp4"
        truth = generate_video(path, seed=seed * 1000 + i, images_dir=images_dir, **kwargs)
        path.with_suffix(".truth.json").write_text(json.dumps(truth.to_json()))
        paths.append(path)
    return paths


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) against boxes ``b`` (n, 4); NaN boxes give 0."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.nan_to_num(inter / np.maximum(union, 1e-9), nan=0.0)


def track_quality(result: VideoResult, truth: GroundTruth, min_iou: float = 0.5) -> dict:
    """Precision: of all crop pairs within one track, the share whose two crops both lie on
    the same ground-truth object (IoU >= min_iou). Recall: the share of objects with at least
    one such correct pair."""
    pairs = correct = 0
    found: set[int] = set()
    for track in result.tracks:
        labels = []
        for crop in track.crops:
            ious = iou(np.asarray(crop.box, np.float32), truth.boxes[crop.frame_index])
            best = int(np.argmax(ious))
            labels.append(best if ious[best] >= min_iou else -1)
        labels = np.asarray(labels)
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
        upper = np.triu_indices(len(labels), 1)
        pairs += len(upper[0])
        correct += int(same[upper].sum())
        found |= {int(lab) for lab in labels[upper[0]][same[upper]]}
    n_objects = truth.boxes.shape[1]
    return {"precision": correct / pairs if pairs else 0.0,
            "recall": len(found) / n_objects if n_objects else 0.0,
            "pairs": pairs, "tracks": len(result.tracks)}
