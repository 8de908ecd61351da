"""Tracking proposed boxes forward with OpenCV contrib trackers, a forward-backward check
against drift, and the crop filters (tiny, blurred, static).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vidmine.images import encode_image, resize_long_side

from .config import MiningConfig

# The largest box, in pixels, a track runs at (track_and_check): KCF's time per update falls
# from ~4 ms for an 80 x 70 box to ~0.7 ms at this size, and the tracks and crops of the
# sample videos and the synthetic ground truth stay as they were (docs/mining.md, "Speed").
MAX_BOX_AREA = 32 * 32

_TRACKER_CLASSES = {"kcf": "TrackerKCF", "csrt": "TrackerCSRT", "mil": "TrackerMIL",
                    "mosse": "TrackerMOSSE"}


def make_tracker(name: str):
    """A fresh OpenCV tracker; the factory has moved between cv2 and cv2.legacy before."""
    cls = _TRACKER_CLASSES.get(name)
    if cls is None:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(_TRACKER_CLASSES)}")
    for module in (cv2, getattr(cv2, "legacy", None)):
        factory = getattr(module, f"{cls}_create", None) if module is not None else None
        if factory is not None:
            return factory()
    raise RuntimeError(f"this OpenCV build has no {cls} (install opencv-contrib-python-headless)")


def _to_xywh(box: np.ndarray) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))


def _from_xywh(rect) -> np.ndarray:
    x, y, w, h = rect
    return np.array([x, y, x + w, y + h], np.float32)


def run_tracker(name: str, frames: list[np.ndarray], box: np.ndarray) -> list[np.ndarray]:
    """Boxes on ``frames[0..k]`` starting from ``box`` on frames[0]; stops at the first failure
    or when the box leaves the frame."""
    h, w = frames[0].shape[:2]
    tracker = make_tracker(name)
    tracker.init(frames[0], _to_xywh(box))
    boxes = [box.astype(np.float32)]
    for frame in frames[1:]:
        ok, rect = tracker.update(frame)
        if not ok:
            break
        b = _from_xywh(rect)
        if b[0] < -0.25 * (b[2] - b[0]) or b[1] < -0.25 * (b[3] - b[1]) \
                or b[2] > w + 0.25 * (b[2] - b[0]) or b[3] > h + 0.25 * (b[3] - b[1]):
            break
        boxes.append(b)
    return boxes


def forward_backward_error(name: str, frames: list[np.ndarray], boxes: list[np.ndarray]) -> float:
    """Track the last box back to the first frame; the distance between where it lands and
    where the track began, as a fraction of the box diagonal (inf when the tracker fails)."""
    n = len(boxes)
    back = run_tracker(name, frames[:n][::-1], boxes[-1])
    if len(back) < n:
        return float("inf")
    start, end = boxes[0], back[-1]
    diag = float(np.hypot(start[2] - start[0], start[3] - start[1]))
    c0 = (start[:2] + start[2:]) / 2
    c1 = (end[:2] + end[2:]) / 2
    return float(np.hypot(*(c1 - c0))) / max(diag, 1e-6)


def track_and_check(name: str, frames: list[np.ndarray], box: np.ndarray,
                    max_box_area: float | None = None) -> tuple[list[np.ndarray], float]:
    """Boxes of ``box`` tracked through ``frames`` (see run_tracker) and their forward-backward
    error (inf with fewer than two boxes), in the pixels of ``frames``.

    The frames are first scaled down so that the box covers at most ``max_box_area`` pixels
    (default MAX_BOX_AREA): a tracker's time per update grows with the box's area (KCF's
    correlation runs over a window 2.5 times the box), and the forward-backward check is a
    fraction of the box diagonal, which the scale does not change."""
    limit = MAX_BOX_AREA if max_box_area is None else max_box_area
    area = float((box[2] - box[0]) * (box[3] - box[1]))
    scale = min(1.0, np.sqrt(limit / area)) if area > 0 else 1.0
    if scale < 1.0:
        frames = [cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                  for f in frames]
    boxes = run_tracker(name, frames, box * scale)
    error = forward_backward_error(name, frames, boxes) if len(boxes) >= 2 else float("inf")
    return [(b / scale).astype(np.float32) for b in boxes], error


def sharpness(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def crop_with_margin(rgb: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
    x1, y1 = int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my)))
    return rgb[y0:y1, x0:x1]


@dataclass
class Crop:
    position: int            # index into the window's frames
    box: np.ndarray          # working pixels, without margin
    image: bytes             # encoded crop (with margin)
    width: int
    height: int
    quality: float           # Laplacian variance: higher is sharper


def select_crops(frames_rgb: list[np.ndarray], boxes: list[np.ndarray], cfg: MiningConfig,
                 jpeg_quality: int) -> list[Crop]:
    """First, last and every k-th position of a track, less tiny, blurred and static crops."""
    n = len(boxes)
    positions = sorted(set(range(0, n, cfg.crop_stride)) | {n - 1})
    kept: list[Crop] = []
    last_thumb = None
    for p in positions:
        box = boxes[p]
        if min(box[2] - box[0], box[3] - box[1]) < cfg.min_crop_side:
            continue
        img = crop_with_margin(frames_rgb[p], box, cfg.context_margin)
        if img.size == 0:
            continue
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        quality = sharpness(gray)
        if quality < cfg.blur_threshold:
            continue
        thumb = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        if last_thumb is not None and np.abs(thumb - last_thumb).mean() < cfg.static_threshold:
            continue
        last_thumb = thumb
        img, _ = resize_long_side(img, cfg.max_crop_side)
        kept.append(Crop(position=p, box=box, image=encode_image(img, jpeg_quality),
                         width=img.shape[1], height=img.shape[0], quality=quality))
    return kept
