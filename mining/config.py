"""Every number of the mining recipe, as one dataclass: the ``[mining]`` table of the TOML file,
overridable by ``--flag`` on the command line (storage.config.add_config_args/build_config).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vidmine.config import validate
from vidmine.errors import ConfigError

TRACKERS = ("kcf", "lk", "csrt", "mil", "mosse")
PROPOSERS = ("motion", "selective_search")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".vob")


@dataclass
class MiningConfig:
    # -- decoding ------------------------------------------------------------------------
    sample_fps: float = field(default=8.0, metadata={"above": 0,
        "help": "frames per second taken from each video (all frames are decoded)"})
    working_long_side: int = field(default=600, metadata={"min": 16,
        "help": "long side in pixels of the frames that are tracked and cropped"})
    decode_threads: int = field(default=1, metadata={
        "help": "decoder threads per worker (set explicitly: frame threading has deadlocked)"})
    decode_thread_type: str = field(default="SLICE", metadata={"choices": ("SLICE", "FRAME", "AUTO"),
        "help": "decoder threading: SLICE, FRAME or AUTO"})
    max_bad_packets: int = field(default=200, metadata={
        "help": "damaged packets skipped in one video before the rest of it is given up"})
    # -- limits against hostile input -----------------------------------------------------
    max_pixels: int = field(default=4096 * 2304, metadata={"above": 0,
        "help": "largest frame (width*height) accepted; bigger videos are rejected"})
    max_duration_s: float = field(default=4 * 3600.0, metadata={"above": 0,
        "help": "longest video accepted, in seconds"})
    video_timeout_s: float = field(default=1800.0, metadata={"above": 0,
        "help": "wall-clock limit for mining one video; past it the video fails"})
    # -- moving-object discovery -----------------------------------------------------------
    proposer: str = field(default="motion", metadata={"choices": PROPOSERS,
        "help": "box proposer: motion (flow with camera motion removed) or selective_search"})
    flow_long_side: int = field(default=192, metadata={"min": 16,
        "help": "long side of the gray frames the optical flow runs on"})
    motion_threshold: float = field(default=1.0, metadata={
        "help": "residual flow (px at flow resolution) above which a point moves"})
    texture_threshold: float = field(default=8.0, metadata={
        "help": "gradient magnitude a point needs to count in the moving fraction"})
    min_moving_fraction: float = field(default=0.02, metadata={"max": 1,
        "help": "skip frames where fewer textured points move (noise); the 2015 paper used "
                "0.25 on SURF points of large objects"})
    max_moving_fraction: float = field(default=0.75, metadata={"max": 1,
        "help": "skip frames where more textured points move (camera motion not explained)"})
    min_box_fraction: float = field(default=0.004, metadata={"max": 1,
        "help": "smallest proposed box, as a fraction of the frame area"})
    max_box_fraction: float = field(default=0.5, metadata={"max": 1,
        "help": "largest proposed box, as a fraction of the frame area"})
    nms_iou: float = field(default=0.3, metadata={"max": 1, "help": "IoU above which NMS drops a box"})
    max_boxes: int = field(default=3, metadata={"above": 0, "help": "most objects tracked from one frame"})
    shot_threshold: float = field(default=0.5, metadata={
        "help": "histogram (Bhattacharyya) distance between sampled frames that marks a cut"})
    # -- tracking -------------------------------------------------------------------------
    tracker: str = field(default="kcf", metadata={"choices": TRACKERS,
        "help": "OpenCV tracker: kcf, csrt, mil, mosse"})
    track_long_side: int = field(default=192, metadata={"min": 16,
        "help": "long side of the frames the tracker runs on (crops come from working frames)"})
    track_span: int = field(default=30, metadata={"above": 0, "help": "source frames each box is tracked"})
    fb_max_error: float = field(default=0.15, metadata={
        "help": "forward-backward check: largest end error, as a fraction of the box diagonal"})
    crop_stride: int = field(default=3, metadata={"above": 0,
        "help": "store the first, the last and every k-th sampled frame of a track"})
    context_margin: float = field(default=0.1, metadata={
        "help": "context added around each box, as a fraction of its size per side"})
    min_crop_side: int = field(default=24, metadata={"above": 0,
        "help": "crops smaller than this (working px) are dropped"})
    max_crop_side: int = field(default=256, metadata={"above": 0,
        "help": "stored crops are downscaled to at most this long side"})
    blur_threshold: float = field(default=20.0, metadata={
        "help": "crops whose Laplacian variance is below this are dropped as blurred"})
    static_threshold: float = field(default=2.0, metadata={
        "help": "crops differing from the last kept crop by less (mean abs, 0-255) are dropped"})
    min_track_crops: int = field(default=2, metadata={"above": 0,
        "help": "tracks with fewer crops are dropped"})
    # -- full frames for frame-temporal positives -----------------------------------------
    frame_interval_s: float = field(default=1.0, metadata={
        "help": "store a downscaled full frame this often (0 = never)"})
    frame_long_side: int = field(default=256, metadata={"min": 16, "help": "long side of stored full frames"})
    # -- workers, leases, discovery -------------------------------------------------------
    workers: int = field(default=1, metadata={"above": 0, "help": "mining worker processes"})
    executor: str = field(default="local", metadata={"choices": ("local", "ray"),
        "help": "local (process pool) or ray"})
    lease_s: float = field(default=120.0, metadata={"above": 0,
        "help": "how long a claim lasts without a heartbeat before others may take the video"})
    heartbeat_s: float = field(default=20.0, metadata={"above": 0,
        "help": "how often a worker renews its lease"})
    max_attempts: int = field(default=3, metadata={"above": 0,
        "help": "workers that may die on one video before it is failed"})
    stable_s: float = field(default=5.0, metadata={
        "help": "a file is mined only after its size and mtime stay unchanged this long"})
    poll_s: float = field(default=5.0, metadata={"above": 0,
        "help": "how often the daemon rescans the folder"})

    def __post_init__(self):
        validate(self)
        if not self.min_moving_fraction < self.max_moving_fraction:
            raise ConfigError("need 0 <= min_moving_fraction < max_moving_fraction <= 1")
