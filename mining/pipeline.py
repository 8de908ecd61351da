"""One video in, tracks of crops out: ``mine_video(path, cfg) -> VideoResult``. Pure: no
database, no shard; the caller commits the result (storage.ingest.commit_video).

The sampled frames are cut into windows of ``track_span`` source frames. A window opens on
the first frame whose motion (against the previous sampled frame) passes the frame rule and
yields boxes; every box is tracked through the window, checked forward-backward, and cropped.
A shot boundary closes the window early, so no track crosses a cut.

Each sampled frame is looked at in three sizes (``Views``): the working RGB frame from the
decoder (crops, stored frames), and two made from it, each at most once and only when asked
for: the tracker's RGB frame (also the shot histogram's input) and the flow's gray frame.
A window keeps only these, and a finished track only its crops.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
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
)
from .track import Crop, lk_track_and_check, select_crops, track_and_check


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


class Views:
    """One sampled frame in the sizes mining looks at it, each made at most once and only
    when asked for: a frame inside a window never needs the flow's gray frame."""

    def __init__(self, frame: Frame, cfg: MiningConfig):
        self.frame = frame      # working resolution: crops and stored full frames
        self.cfg = cfg

    @cached_property
    def small(self) -> np.ndarray:
        """RGB, long side track_long_side: the tracker's input and the shot histogram's.
        Bilinear: trackers do not mind aliasing, and it is 5x cheaper than INTER_AREA (the
        histogram averages a 64x48 thumbnail of it, so it does not mind either)."""
        return resize_long_side(self.frame.rgb, self.cfg.track_long_side, cv2.INTER_LINEAR)[0]

    @cached_property
    def gray(self) -> np.ndarray:
        """Long side flow_long_side, area-averaged from the working frame: the flow's input,
        made only for frames a proposal looks at. Not made from ``small``: the moving-point
        masks follow small changes of the flow's input, and a bilinear one moved the sample
        videos' tracks by up to 60 % (docs/mining.md, "Speed")."""
        gray = cv2.cvtColor(self.frame.rgb, cv2.COLOR_RGB2GRAY)
        return resize_long_side(gray, self.cfg.flow_long_side, cv2.INTER_AREA)[0]

    @cached_property
    def small_gray(self) -> np.ndarray:
        """``small`` in gray: the "lk" tracker's input."""
        return cv2.cvtColor(self.small, cv2.COLOR_RGB2GRAY)

    @cached_property
    def hist(self) -> np.ndarray:
        return color_histogram(self.small)


class _Miner:
    def __init__(self, cfg: MiningConfig, jpeg_quality: int, stats: MiningStats):
        self.cfg = cfg
        self.jpeg_quality = jpeg_quality
        self.detector = MotionDetector(cfg)
        self.stats = stats
        # Per track: its crops, (frame index, time) of each crop, score. Not the frames: a
        # worker's memory stays bounded by one window however many tracks a video yields.
        self.tracks: list[tuple[list[Crop], list[tuple[int, float]], float]] = []

    def propose(self, views: list[Views]) -> np.ndarray:
        """Boxes in working pixels on ``views[-2]`` (motion: from it and its neighbours) or
        on ``views[-1]`` (selective search); empty when the frame is skipped."""
        if self.cfg.proposer == "selective_search":
            cur = views[-1]
            # Selective search (~100x the cost of this resize) runs at the flow's size.
            rgb, _ = resize_long_side(cur.frame.rgb, self.cfg.flow_long_side)
            boxes = selective_search_boxes(rgb, self.cfg)
            flow_px = rgb.shape[1]
        else:
            before, cur, after = views
            motion = self.detector.moving_points(before.gray, cur.gray, after.gray)
            if not self.detector.frame_is_usable(motion):
                self.stats.frames_skipped += 1
                return np.empty((0, 4), np.float32)
            boxes = motion_boxes(motion, self.cfg)
            flow_px = cur.gray.shape[1]
        self.stats.proposals += len(boxes)
        return boxes * (cur.frame.rgb.shape[1] / flow_px)

    def track_window(self, window: list[Views], seeds: np.ndarray) -> None:
        cfg = self.cfg
        frames = [v.frame for v in window]
        small = [v.small for v in window]
        scale = small[0].shape[1] / frames[0].rgb.shape[1]
        if cfg.tracker == "lk":
            tracked = lk_track_and_check([v.small_gray for v in window], seeds * scale)
        else:
            tracked = (track_and_check(cfg.tracker, small, seed * scale) for seed in seeds)
        for boxes, error in tracked:
            if len(boxes) < 2:
                self.stats.tracks_short += 1
                continue
            if error > cfg.fb_max_error:
                self.stats.tracks_drifted += 1
                continue
            working = [b / scale for b in boxes]
            crops = select_crops([f.rgb for f in frames[:len(boxes)]], working, cfg,
                                 self.jpeg_quality)
            if len(crops) < cfg.min_track_crops:
                self.stats.tracks_short += 1
                continue
            stamps = [(frames[c.position].index, frames[c.position].time) for c in crops]
            self.tracks.append((crops, stamps, 1.0 - error))
        self.stats.windows.append((frames[0].index, frames[-1].index))


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
        recent: deque[Views] = deque(maxlen=3)  # since the last cut
        prev_hist = None
        window: list[Views] = []
        seeds = None
        last = None
        for frame in reader.frames(should_stop):
            stats.frames_sampled += 1
            last = frame
            views = Views(frame, cfg)
            cut = prev_hist is not None and is_shot_boundary(prev_hist, views.hist,
                                                             cfg.shot_threshold)
            prev_hist = views.hist
            stats.shot_boundaries += cut
            if cut:
                recent.clear()
            if cfg.frame_interval_s > 0 and frame.time >= next_frame_t:
                frames_out.append(_full_frame(frame, cfg, jpeg_quality))
                next_frame_t = frame.time + cfg.frame_interval_s
            if window and (cut or frame.index - window[0].frame.index > cfg.track_span):
                miner.track_window(window, seeds)
                window = []
            recent.append(views)
            if window:
                window.append(views)
            elif len(recent) >= needed:
                boxes = miner.propose(list(recent)[-needed:])
                if len(boxes):
                    seeds = boxes
                    window = list(recent)[-needed:][needed // 2:]
        if len(window) > 1:
            miner.track_window(window, seeds)
        info = reader.info
        stats.frames_decoded = reader.frames_decoded
        stats.bad_packets = reader.bad_packets
    src_scale = info.width / last.rgb.shape[1] if last is not None else 1.0
    result = VideoResult(frames=frames_out)
    for crops, stamps, score in miner.tracks:
        records = [CropRecord(frame_index=index, box=tuple(int(round(v)) for v in c.box * src_scale),
                              data=c.image, width=c.width, height=c.height,
                              pts=t, quality=c.quality) for c, (index, t) in zip(crops, stamps)]
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
