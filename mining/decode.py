"""Decoding with PyAV: sampled frames at a working resolution, or a one-line reason to reject.

Frames come out of the decoder in display order, but some files carry broken timestamps
(box.mp4 stores decode-order pts on B-frames). Since the decoder's order is right and the
set of pts is right, each frame gets the k-th smallest pts seen, using a small reorder
buffer; sampling at a target rate then follows real time, also in variable-frame-rate video.

Only sampled frames are converted to RGB, and scaled to the working size by halving with
2x2 averages while they are at least twice too big, then bilinear for the rest: as good as
INTER_AREA at an arbitrary ratio (over 47 dB against it) for a quarter of the time
(docs/mining.md, "Speed"). Every decoded frame's size is checked against ``max_pixels``
before anything is done with it, since a stream may switch to bigger frames after its header.
"""
from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.logging
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from .config import MiningConfig

# Corrupt input raises these from PyAV/FFmpeg (docs/design.md: not only InvalidDataError).
DECODE_ERRORS = (av.error.FFmpegError, IndexError, EOFError, ValueError, OSError)
REORDER_DEPTH = 16  # deepest B-frame reordering in H.264/HEVC


class VideoRejected(Exception):
    """The file cannot be mined; ``str()`` is the one-line reason stored on the video row."""


class MiningStopped(Exception):
    """Mining was asked to stop (a signal or the wall-clock limit); the reason is the message."""


@dataclass
class VideoInfo:
    width: int            # displayed size (after rotation), source pixels
    height: int
    fps: float            # average frame rate as declared
    duration: float       # seconds, as declared (0 when unknown)
    n_frames: int         # as declared (0 when unknown)
    rotation: int         # degrees counter-clockwise applied to display the frames
    codec: str


@dataclass
class Frame:
    index: int            # ordinal of the frame in display order (source frames)
    time: float           # seconds
    rgb: np.ndarray       # working resolution, HxWx3 uint8, rotation applied


def quiet_logging() -> None:
    """FFmpeg logging through Python costs a lock per message: keep it off in workers."""
    av.logging.set_level(None)


def _reason(exc: BaseException) -> str:
    # FFmpeg errors carry errno and path in str(); the message alone reads better in a table.
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def working_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Frames are scaled so the long side is ``long_side``; within 25 % of it they are kept
    as they are (resampling 640 px to 600 px costs time and gains nothing)."""
    scale = long_side / max(width, height)
    if scale > 0.8:
        return width, height
    return max(2, round(width * scale)), max(2, round(height * scale))


def downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``size`` (width, height), which is not bigger. Exact halvings are
    2x2 averages (INTER_AREA's fast path); the last step, by a factor under 2, is bilinear."""
    width, height = size
    while img.shape[1] >= 2 * width and img.shape[0] >= 2 * height:
        h, w = img.shape[0] // 2, img.shape[1] // 2   # an odd last row or column is dropped
        img = cv2.resize(img[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA)
    if (img.shape[1], img.shape[0]) != (width, height):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    # PyAV's frame.rotation is counter-clockwise degrees from the display matrix.
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, turns)) if turns else img


class VideoReader:
    """``with VideoReader(path, cfg) as r: r.info; for f in r.frames(): ...``."""

    def __init__(self, path: str | Path, cfg: MiningConfig):
        self.path = Path(path)
        self.cfg = cfg
        self.frames_decoded = 0
        self.bad_packets = 0
        self._container = None
        # One reformatter for the whole video keeps its swscale context from frame to frame.
        self._reformatter = VideoReformatter()

    def __enter__(self) -> VideoReader:
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            raise VideoRejected(f"cannot read file: {exc.strerror}") from exc
        if size == 0:
            raise VideoRejected("empty file (0 bytes)")
        try:
            self._container = av.open(str(self.path), mode="r", metadata_errors="ignore")
        except DECODE_ERRORS as exc:
            raise VideoRejected(f"not a readable video container: {_reason(exc)}") from exc
        try:
            self.info = self._probe()
        except BaseException:
            self._container.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _probe(self) -> VideoInfo:
        c = self._container
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams})
            if "audio" in kinds:
                raise VideoRejected("audio only: the file has no video stream")
            raise VideoRejected("no video stream in the file"
                                + (f" (only {', '.join(kinds)})" if kinds else ""))
        stream = c.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:
            raise VideoRejected("no decoder for the video stream's codec")
        stream.thread_type = self.cfg.decode_thread_type
        stream.thread_count = self.cfg.decode_threads
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise VideoRejected("the video stream declares no frame size (corrupt header)")
        if width * height > self.cfg.max_pixels:
            raise VideoRejected(f"frame size {width}x{height} is over the limit of "
                                f"{self.cfg.max_pixels} pixels (max_pixels)")
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif c.duration is not None:
            duration = c.duration / av.time_base
        if duration > self.cfg.max_duration_s:
            raise VideoRejected(f"duration {duration:.0f} s is over the limit of "
                                f"{self.cfg.max_duration_s:.0f} s (max_duration_s)")
        rate = stream.average_rate or stream.guessed_rate
        # Rotation lives in each frame's display matrix; frames() sets it from the first one.
        return VideoInfo(width=width, height=height, fps=float(rate) if rate else 0.0,
                         duration=duration, n_frames=int(stream.frames or 0),
                         rotation=0, codec=ctx.name)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every decodable frame; damaged packets are counted and skipped."""
        stream = self._container.streams.video[0]
        packets = self._container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except DECODE_ERRORS:
                self.bad_packets += 1  # the demuxer resynchronises on the next packet
                if self.bad_packets > self.cfg.max_bad_packets:
                    return
                continue
            try:
                frames = packet.decode()
            except DECODE_ERRORS:
                self.bad_packets += 1
                if self.bad_packets > self.cfg.max_bad_packets:
                    return
                continue
            for frame in frames:
                if frame.is_corrupt:
                    self.bad_packets += 1
                    continue
                self._check_size(frame)
                yield frame

    def _check_size(self, frame: av.VideoFrame) -> None:
        """The header's size was checked in _probe, but a stream can switch to bigger frames
        later (a new SPS): every frame is checked before anything is done with it."""
        if frame.width * frame.height > self.cfg.max_pixels:
            raise VideoRejected(f"frame size {frame.width}x{frame.height} is over the limit of "
                                f"{self.cfg.max_pixels} pixels (max_pixels)")

    def _timed(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """Frames with a monotone time: the k-th frame gets the k-th smallest pts."""
        fallback_dt = 1.0 / (self.info.fps or 25.0)
        pending: deque[av.VideoFrame] = deque()
        heap: list[float] = []
        last = newest = -fallback_dt
        for frame in self._decoded():
            t = frame.time
            # No timestamp (a raw stream): one frame after the newest time seen. Not after
            # ``last``, the time yielded, which lags REORDER_DEPTH frames behind.
            newest = max(newest, t if t is not None else newest + fallback_dt)
            heapq.heappush(heap, t if t is not None else newest)
            pending.append(frame)
            if len(pending) > REORDER_DEPTH:
                last = max(heapq.heappop(heap), last + 1e-6)
                yield last, pending.popleft()
        while pending:
            last = max(heapq.heappop(heap), last + 1e-6)
            yield last, pending.popleft()

    def frames(self, should_stop: Callable[[], str | None] | None = None) -> Iterator[Frame]:
        """Sampled frames at ``cfg.sample_fps`` in working resolution.

        ``should_stop`` is polled between frames; a non-empty answer raises MiningStopped.
        """
        step = 1.0 / self.cfg.sample_fps
        next_t = None
        last_t = 0.0
        out_size = None
        for index, (t, frame) in enumerate(self._timed()):
            self.frames_decoded += 1
            last_t = t
            if should_stop is not None and (why := should_stop()):
                raise MiningStopped(why)
            if out_size is None:
                out_size = self._first_frame(frame)
            if next_t is not None and t < next_t - 1e-6:
                continue
            next_t = (t if next_t is None else next_t) + step
            if t >= next_t:  # a gap in the video (VFR or dropped frames): resync the grid
                next_t = t + step
            try:
                rgb = self._working_rgb(frame, out_size)
            except DECODE_ERRORS:
                self.bad_packets += 1
                continue
            yield Frame(index=index, time=t, rgb=rgb)
        if self.frames_decoded == 0:
            raise VideoRejected("no decodable video frames (corrupt or truncated data)")
        declared = self.info.duration
        if declared >= 1.0 and last_t < 0.5 * declared:
            raise VideoRejected(f"truncated: decodable video ends at {last_t:.1f} s "
                                f"of {declared:.1f} s declared")

    def _working_rgb(self, frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
        """The frame as RGB at the working ``size`` (displayed, i.e. after rotation); a frame
        whose size changed mid-stream is scaled to the same size.

        threads=1: PyAV's default (automatic) starts swscale threads on every call, which
        cost more than the conversion itself and compete with the other workers' cores."""
        rgb = self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
        stored = size if self.info.rotation % 180 == 0 else size[::-1]
        return _rotate(downscale(rgb, stored), self.info.rotation)

    def _first_frame(self, frame: av.VideoFrame) -> tuple[int, int]:
        """Adopt the frame's real size and rotation; return the working (width, height)."""
        self.info.rotation = int(frame.rotation or 0) % 360
        w, h = frame.width, frame.height
        if self.info.rotation % 180:
            w, h = h, w
        self.info.width, self.info.height = w, h
        return working_size(w, h, self.cfg.working_long_side)


def decode_only(path: str | Path, cfg: MiningConfig) -> int:
    """Decode every frame and convert nothing: the speed baseline of the benchmark."""
    with VideoReader(path, cfg) as reader:
        return sum(1 for _ in reader._decoded())
