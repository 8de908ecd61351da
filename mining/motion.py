"""Where do objects move? Dense flow with the camera's motion removed, boxes around what is
left, NMS; selective search as the alternative proposer; shot boundaries from histograms.

Camera motion is a homography fitted (RANSAC) to the flow of textured points, as improved
dense trajectories do; a point moves when its flow departs from the homography by more than
``motion_threshold``. Frames where almost nothing or almost everything moves are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .config import MiningConfig

GRID_STEP = 6  # px at flow resolution between the points the homography is fitted to
BORDER_DIV = 24  # the border band ignored is 1/24 of the short side


def color_histogram(rgb: np.ndarray) -> np.ndarray:
    """Hue-saturation histogram of a frame (shot-boundary detection), normalised to sum 1."""
    thumb = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
    return (hist / max(hist.sum(), 1.0)).astype(np.float32)


def is_shot_boundary(prev_hist: np.ndarray, hist: np.ndarray, threshold: float) -> bool:
    return cv2.compareHist(prev_hist, hist, cv2.HISTCMP_BHATTACHARYYA) > threshold


@dataclass
class MotionResult:
    moving: np.ndarray        # bool mask at flow resolution
    residual: np.ndarray      # flow left after removing the camera's, px at flow resolution
    fraction: float           # moving share of the textured points
    camera_fit: bool          # False when no homography could be fitted


class MotionDetector:
    """Moving-point masks between two gray frames of the same size (flow resolution)."""

    def __init__(self, cfg: MiningConfig):
        self.cfg = cfg
        self.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        # The preset stops two pyramid levels above the input, which smears object motion
        # over the background around it; on already small frames the finest level is cheap.
        # (Measured: finest scale 1, a patch stride of 6 or 8, or a 128/160 px flow each
        # lose intra-track precision on the synthetic ground truth; docs/mining.md, "Speed".)
        self.flow.setFinestScale(0)
        self._grid_shape: tuple[int, int] | None = None

    def _grid(self, shape: tuple[int, int]) -> np.ndarray:
        if self._grid_shape != shape:
            ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
            self._coords = np.stack([xs, ys], axis=-1)
            self._grid_shape = shape
        return self._coords

    def moving_points(self, prev: np.ndarray, cur: np.ndarray,
                      nxt: np.ndarray | None = None) -> MotionResult:
        """Moving points of ``cur``, in cur's coordinates (flow runs from cur to its
        neighbours). Against one neighbour, the background the object uncovers has no match
        and looks like motion too; with both neighbours, only points that move relative to
        both are kept (three-frame differencing), which leaves the object itself.

        The minimum over both neighbours can only lower the moving fraction, so a frame with
        too few moving points against ``prev`` has too few against both: its flow to ``nxt``
        is not computed (the result then holds the residual against ``prev`` alone)."""
        coords = self._grid(cur.shape)
        gx = cv2.Sobel(cur, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(cur, cv2.CV_32F, 0, 1, ksize=3)
        textured = cv2.magnitude(gx, gy) > self.cfg.texture_threshold * 4  # Sobel gain is 4
        residual, camera_fit = self._residual(cur, prev, coords, textured)
        fraction = self._moving_fraction(residual, textured)
        if nxt is not None and fraction >= self.cfg.min_moving_fraction:
            other, fit = self._residual(cur, nxt, coords, textured)
            residual = np.minimum(residual, other)
            camera_fit = camera_fit and fit
            fraction = self._moving_fraction(residual, textured)
        return MotionResult(moving=residual > self.cfg.motion_threshold, residual=residual,
                            fraction=fraction, camera_fit=camera_fit)

    def _moving_fraction(self, residual: np.ndarray, textured: np.ndarray) -> float:
        """Moving share of the textured points; clears ``residual``'s border band first:
        content entering at the borders under camera motion has no match, so no evidence."""
        b = max(2, min(residual.shape) // BORDER_DIV)
        residual[:b], residual[-b:], residual[:, :b], residual[:, -b:] = 0, 0, 0, 0
        n_textured = int(np.count_nonzero(textured))
        if not n_textured:
            return 0.0
        moving = residual > self.cfg.motion_threshold
        return float(np.count_nonzero(moving & textured)) / n_textured

    def _residual(self, cur: np.ndarray, other: np.ndarray, coords: np.ndarray,
                  textured: np.ndarray) -> tuple[np.ndarray, bool]:
        """Per-pixel flow magnitude (cur -> other) left after the camera's homography."""
        flow = self.flow.calc(cur, other, None)
        sample = textured[::GRID_STEP, ::GRID_STEP]
        src = coords[::GRID_STEP, ::GRID_STEP][sample]
        dst = src + flow[::GRID_STEP, ::GRID_STEP][sample]
        homography = None
        if len(src) >= 12:
            homography, _ = cv2.findHomography(src, dst, cv2.RANSAC, 1.0, maxIters=500)
        if homography is None:
            # Too little texture to fit the camera: remove the median translation only.
            residual = flow - np.median(flow.reshape(-1, 2), axis=0)
        else:
            predicted = cv2.perspectiveTransform(coords.reshape(-1, 1, 2), homography)
            residual = (coords + flow) - predicted.reshape(coords.shape)
        return np.hypot(residual[..., 0], residual[..., 1]), homography is not None

    def frame_is_usable(self, result: MotionResult) -> bool:
        """The 2015 rule: skip noise (too few moving points) and camera motion (too many)."""
        return self.cfg.min_moving_fraction <= result.fraction <= self.cfg.max_moving_fraction


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    if len(boxes) == 0:
        return np.empty(0, np.int64)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        overlap = inter / (area[i] + area[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def _limit_boxes(boxes: np.ndarray, scores: np.ndarray, frame_area: float,
                 cfg: MiningConfig) -> np.ndarray:
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ok = (area >= cfg.min_box_fraction * frame_area) & (area <= cfg.max_box_fraction * frame_area)
    boxes, scores = boxes[ok], scores[ok]
    keep = nms(boxes, scores, cfg.nms_iou)[: cfg.max_boxes]
    return boxes[keep]


def motion_boxes(motion: MotionResult, cfg: MiningConfig) -> np.ndarray:
    """Boxes (x0, y0, x1, y1, at flow resolution) around connected moving regions.

    Dense flow bleeds an object's motion into a halo of background around it, with
    residuals that fade with distance; each region's box is therefore drawn around its
    points above half of the region's strong (90th percentile) residual."""
    mask = motion.moving.astype(np.uint8)
    k = max(3, (min(mask.shape) // 40) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_pixels = cfg.min_box_fraction * mask.size
    boxes, scores = [], []
    for i in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_pixels / 4) + 1:
        x, y, w, h = stats[i, :4]
        region = labels[y:y + h, x:x + w] == i
        res = motion.residual[y:y + h, x:x + w]
        strong = region & (res >= 0.5 * np.percentile(res[region], 90))
        strong = _solid_core(strong)
        if not strong.any():
            continue
        ys, xs = np.nonzero(strong)
        box = np.array([x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1], np.float32)
        fill = strong.sum() / ((box[2] - box[0]) * (box[3] - box[1]))
        boxes.append(box)
        scores.append(strong.sum() * fill)  # solid regions first; thin noise scores low
    if not boxes:
        return np.empty((0, 4), np.float32)
    return _limit_boxes(np.stack(boxes), np.asarray(scores, np.float32), float(mask.size), cfg)


def _solid_core(mask: np.ndarray) -> np.ndarray:
    """The largest solid part of a region: an opening scaled to the region's size cuts off
    thin tails (unreliable flow in flat background beside an object)."""
    k = max(3, int(0.3 * np.sqrt(mask.sum())) | 1)
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return opened.astype(bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


_SS = None


def selective_search_boxes(rgb_small: np.ndarray, cfg: MiningConfig) -> np.ndarray:
    """Region proposals (x0, y0, x1, y1) by selective search (OpenCV contrib ximgproc)."""
    global _SS
    if _SS is None:
        _SS = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    _SS.setBaseImage(cv2.cvtColor(rgb_small, cv2.COLOR_RGB2BGR))
    _SS.switchToSelectiveSearchFast()
    rects = _SS.process().astype(np.float32)
    if len(rects) == 0:
        return np.empty((0, 4), np.float32)
    boxes = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2],
                             rects[:, 1] + rects[:, 3]])
    # Selective search lists regions from the most to the least grouped: earlier is better.
    scores = np.linspace(1.0, 0.0, len(boxes), dtype=np.float32)
    return _limit_boxes(boxes, scores, float(rgb_small.shape[0] * rgb_small.shape[1]), cfg)
