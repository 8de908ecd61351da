"""One video in, tracks of crops out: ``mine_video(path, cfg) -> VideoResult``. Pure: no
database, no shard; the caller commits the result (storage.ingest.commit_video).

The sampled frames are cut into windows of ``track_span`` source frames. A window opens on
the first frame whose motion (against the previous sampled frame) passes the frame rule and
yields boxes; every box is tracked through the window, checked forward-backward, and cropped.
A shot boundary closes the window early, so no track crosses a cut.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidmine.images import encode_image, resize_long_side
from vidmine.storage.ingest import CropRecord, TrackRecord, VideoResult

from .config import MiningConfig
from .decode import Frame, VideoReader
from .motion import (
    MotionDetector,
    color_histogram,
    is_shot_boundary,
    motion_boxes,
    selective_search_boxes,
    small_gray,
)
from .track import forward_backward_error, run_tracker, select_crops


@dataclass
class MiningStats:
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_skipped: int = 0        # failed the moving-fraction rule
    shot_boundaries: int = 0
    proposals: int = 0
    tracks_drifted: int = 0        # failed the forward-backward check
    tracks_short: int = 0          # too few crops survived the filters
    bad_packets: int = 0
    seconds: float = 0.0
    windows: list[tuple[int, int]] = field(default_factory=list)   # (first, last) frame index


class _Miner:
    def __init__(self, cfg: MiningConfig, jpeg_quality: int, stats: MiningStats):
        self.cfg = cfg
        self.jpeg_quality = jpeg_quality
        self.detector = MotionDetector(cfg)
        self.stats = stats
        self.tracks: list[tuple[list[Frame], list[np.ndarray], list, float]] = []

    def propose(self, frames: list[tuple[Frame, np.ndarray]]) -> np.ndarray:
        """Boxes in working pixels on ``frames[-2]`` (motion: from it and its neighbours) or
        on ``frames[-1]`` (selective search); empty when the frame is skipped."""
        if self.cfg.proposer == "selective_search":
            frame, gray = frames[-1]
            small = cv2.resize(frame.rgb, gray.shape[::-1], interpolation=cv2.INTER_AREA)
            boxes = selective_search_boxes(small, self.cfg)
        else:
            (_, before), (frame, gray), (_, after) = frames
            motion = self.detector.moving_points(before, gray, after)
            if not self.detector.frame_is_usable(motion):
                self.stats.frames_skipped += 1
                return np.empty((0, 4), np.float32)
            boxes = motion_boxes(motion, self.cfg)
        self.stats.proposals += len(boxes)
        return boxes * (frame.rgb.shape[1] / gray.shape[1])

    def track_window(self, window: list[Frame], seeds: np.ndarray) -> None:
        cfg = self.cfg
        small, scale = [], 1.0
        for f in window:
            # Trackers do not mind aliasing and bilinear is 5x cheaper than INTER_AREA.
            img, scale = resize_long_side(f.rgb, cfg.track_long_side, cv2.INTER_LINEAR)
            small.append(img)
        for seed in seeds:
            boxes = run_tracker(cfg.tracker, small, seed * scale)
            if len(boxes) < 2:
                self.stats.tracks_short += 1
                continue
            error = forward_backward_error(cfg.tracker, small, boxes)
            if error > cfg.fb_max_error:
                self.stats.tracks_drifted += 1
                continue
            working = [b / scale for b in boxes]
            crops = select_crops([f.rgb for f in window[:len(boxes)]], working, cfg,
                                 self.jpeg_quality)
            if len(crops) < cfg.min_track_crops:
                self.stats.tracks_short += 1
                continue
            self.tracks.append((window, working, crops, 1.0 - error))
        self.stats.windows.append((window[0].index, window[-1].index))


def mine_video(path: str | Path, cfg: MiningConfig, jpeg_quality: int = 90,
               should_stop: Callable[[], str | None] | None = None,
               stats: MiningStats | None = None) -> VideoResult:
    """Mine one video file; ``stats``, when given, is filled with what happened.

    Raises decode.VideoRejected (an unusable file, with its one-line reason) or
    decode.MiningStopped (``should_stop`` answered, e.g. a signal or the time limit).
    """
    t0 = time.perf_counter()
    miner = _Miner(cfg, jpeg_quality, stats if stats is not None else MiningStats())
    stats = miner.stats
    frames_out: list[CropRecord] = []
    next_frame_t = 0.0
    needed = 1 if cfg.proposer == "selective_search" else 3
    with VideoReader(path, cfg) as reader:
        recent: deque[tuple[Frame, np.ndarray]] = deque(maxlen=3)  # since the last cut
        prev_hist = None
        window: list[Frame] = []
        seeds = None
        for frame in reader.frames(should_stop):
            stats.frames_sampled += 1
            gray = small_gray(frame.rgb, cfg.flow_long_side)
            hist = color_histogram(frame.rgb)
            cut = prev_hist is not None and is_shot_boundary(prev_hist, hist, cfg.shot_threshold)
            prev_hist = hist
            stats.shot_boundaries += cut
            if cut:
                recent.clear()
            if cfg.frame_interval_s > 0 and frame.time >= next_frame_t:
                frames_out.append(_full_frame(frame, cfg, jpeg_quality))
                next_frame_t = frame.time + cfg.frame_interval_s
            if window and (cut or frame.index - window[0].index > cfg.track_span):
                miner.track_window(window, seeds)
                window = []
            recent.append((frame, gray))
            if window:
                window.append(frame)
            elif len(recent) >= needed:
                boxes = miner.propose(list(recent)[-needed:])
                if len(boxes):
                    seeds = boxes
                    window = [f for f, _ in list(recent)[-needed:][needed // 2:]]
        if len(window) > 1:
            miner.track_window(window, seeds)
        last = recent[-1][0] if recent else None
        info = reader.info
        stats.frames_decoded = reader.frames_decoded
        stats.bad_packets = reader.bad_packets
    src_scale = info.width / last.rgb.shape[1] if last is not None else 1.0
    result = VideoResult(frames=frames_out)
    for window, _boxes, crops, score in miner.tracks:
        records = [CropRecord(frame_index=window[c.position].index,
                              box=tuple(int(round(v)) for v in c.box * src_scale),
                              data=c.image, width=c.width, height=c.height,
                              pts=window[c.position].time, quality=c.quality) for c in crops]
        result.tracks.append(TrackRecord(crops=records, proposer=cfg.proposer,
                                         tracker=cfg.tracker, score=score))
    for rec in frames_out:
        rec.box = (0, 0, info.width, info.height)
    stats.seconds = time.perf_counter() - t0
    result.meta = dict(fps=info.fps, n_frames=info.n_frames or stats.frames_decoded,
                       width=info.width, height=info.height,
                       duration=info.duration or (last.time if last else 0.0),
                       frames_decoded=stats.frames_decoded)
    return result


def _full_frame(frame: Frame, cfg: MiningConfig, jpeg_quality: int) -> CropRecord:
    img, _ = resize_long_side(frame.rgb, cfg.frame_long_side)
    return CropRecord(frame_index=frame.index, box=(0, 0, 0, 0), data=encode_image(img, jpeg_quality),
                      width=img.shape[1], height=img.shape[0], pts=frame.time)
