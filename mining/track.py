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
    return centre_error(boxes[0], back[-1])


def centre_error(start: np.ndarray, end: np.ndarray) -> float:
    """How far ``end``'s centre lies from ``start``'s, as a fraction of start's diagonal."""
    diag = float(np.hypot(start[2] - start[0], start[3] - start[1]))
    return float(np.hypot(*((end[:2] + end[2:]) / 2 - (start[:2] + start[2:]) / 2))) / max(diag, 1e-6)


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


# The "lk" tracker: a grid of points per box, pyramidal Lucas-Kanade, median displacement.
# Measured on 12 synthetic videos and the 4 sample videos (docs/mining.md, "Speed").
LK_GRID = 8              # points per box side
LK_WIN = (9, 9)          # LK window, px at track_long_side
LK_LEVELS = 2            # pyramid levels above the frame
LK_MAX_POINT_FB = 1.0    # a point counts when LK brings it back within this many px
LK_MIN_GOOD = 0.3        # a box is lost when fewer of its points count
LK_MAX_SCALE_STEP = 1.2  # a box grows or shrinks by at most this factor per step
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)


def _lk_step(gray_a: np.ndarray, gray_b: np.ndarray, boxes: np.ndarray,
             shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (k, 4) on frame a moved to frame b, all boxes in one LK call each way, and which
    of them are still held: a box moves by the median displacement of its grid points that
    LK brings back to where they started, and scales by the median change of the distances
    between them (Kalal et al.'s median flow). A fixed-size box, as KCF keeps, drifted off
    objects that approach or recede: precision 0.943 instead of 0.980 on 24 synthetic videos.
    (Each call builds its own pyramids: OpenCV 5's Python binding refuses the prebuilt ones
    of buildOpticalFlowPyramid.)"""
    k = len(boxes)
    t = (np.arange(LK_GRID, dtype=np.float32) + 0.5) / LK_GRID
    gx, gy = np.meshgrid(t, t)
    x0, y0, x1, y1 = (boxes[:, i:i + 1] for i in range(4))
    pts = np.stack([x0 + (x1 - x0) * gx.ravel(), y0 + (y1 - y0) * gy.ravel()], -1)
    pts = pts.reshape(-1, 1, 2).astype(np.float32)
    fwd, st1, _ = cv2.calcOpticalFlowPyrLK(gray_a, gray_b, pts, None, winSize=LK_WIN,
                                          maxLevel=LK_LEVELS, criteria=_LK_CRITERIA)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(gray_b, gray_a, fwd, None, winSize=LK_WIN,
                                           maxLevel=LK_LEVELS, criteria=_LK_CRITERIA)
    fb = np.linalg.norm((back - pts).reshape(k, -1, 2), axis=-1)
    good = (st1.ravel() == 1).reshape(k, -1) & (st2.ravel() == 1).reshape(k, -1) \
        & (fb < LK_MAX_POINT_FB)
    held = good.mean(1) >= LK_MIN_GOOD
    before, after = pts.reshape(k, -1, 2), fwd.reshape(k, -1, 2)
    shift = masked_median((after - before).transpose(0, 2, 1), good[:, None, :])   # (k, 2)
    # Scale: the median ratio of the distances between the good points, after / before.
    d0 = np.linalg.norm(before[:, :, None] - before[:, None], axis=-1)
    d1 = np.linalg.norm(after[:, :, None] - after[:, None], axis=-1)
    pairs = good[:, :, None] & good[:, None, :] & np.triu(np.ones(d0.shape[1:], bool), 1)
    scale = masked_median((d1 / np.maximum(d0, 1e-6)).reshape(k, -1), pairs.reshape(k, -1))
    scale = np.clip(np.nan_to_num(scale, nan=1.0), 1 / LK_MAX_SCALE_STEP, LK_MAX_SCALE_STEP)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + np.nan_to_num(shift)
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * scale[:, None]
    moved = np.where(held[:, None], np.concatenate([centre - half, centre + half], 1), boxes)
    h, w = shape
    bw, bh = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
    inside = (moved[:, 0] >= -0.25 * bw) & (moved[:, 1] >= -0.25 * bh) \
        & (moved[:, 2] <= w + 0.25 * bw) & (moved[:, 3] <= h + 0.25 * bh)
    return moved.astype(np.float32), held & inside


def masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """np.median over the last axis of the entries where ``mask`` holds, for every row at
    once (nan for a row with none): one sort instead of a median per box."""
    mask = np.broadcast_to(mask, values.shape)
    ordered = np.sort(np.where(mask, values, np.inf), axis=-1)
    n = mask.sum(-1, keepdims=True)
    lo = np.take_along_axis(ordered, np.maximum(n - 1, 0) // 2, -1)
    hi = np.take_along_axis(ordered, n // 2 - (n == 0), -1)
    return np.where(n > 0, (lo + hi) / 2, np.nan)[..., 0]


def lk_track(grays: list[np.ndarray], seeds: np.ndarray) -> list[list[np.ndarray]]:
    """Each seed box tracked through ``grays`` until it is lost (run_tracker's rules), all
    seeds at once."""
    shape = grays[0].shape[:2]
    tracks = [[s.astype(np.float32)] for s in seeds]
    alive = np.arange(len(seeds))
    for a, b in zip(grays, grays[1:]):
        if not len(alive):
            break
        moved, held = _lk_step(a, b, np.stack([tracks[i][-1] for i in alive]), shape)
        for i, box in zip(alive[held], moved[held]):
            tracks[i].append(box)
        alive = alive[held]
    return tracks


def lk_track_and_check(grays: list[np.ndarray], seeds: np.ndarray) -> list[tuple[list[np.ndarray], float]]:
    """track_and_check for every seed at once with the "lk" tracker: boxes forward, then each
    track's last box back to the first frame, the error as a fraction of the box diagonal."""
    tracks = lk_track(grays, seeds)
    out: list[tuple[list[np.ndarray], float]] = [(t, float("inf")) for t in tracks]
    for n in sorted({len(t) for t in tracks if len(t) >= 2}):
        which = [i for i, t in enumerate(tracks) if len(t) == n]
        back = lk_track(grays[:n][::-1], np.stack([tracks[i][-1] for i in which]))
        for i, returned in zip(which, back):
            if len(returned) == n:
                out[i] = (tracks[i], centre_error(tracks[i][0], returned[-1]))
    return out


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
